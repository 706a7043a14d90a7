"""hvguest.transport"""
