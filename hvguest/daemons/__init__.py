"""hvguest.daemons"""
