"""hvguest.fcopy"""
