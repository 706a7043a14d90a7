"""hvguest.sim"""
