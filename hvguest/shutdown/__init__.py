"""Shutdown: the pre-shutdown hooks run before an orderly power-off, and their recorded
results.
"""
