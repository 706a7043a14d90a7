"""hvguest.cli"""
