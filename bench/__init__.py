"""Benchmarks: hvguest's daemons side by side with the reference C daemons.

Run ``python -m bench kvp|vss|fcopy [--reference]``. Benchmarks print figures and
ratios; they never fail on a timing.
"""
