"""hvguest.roles"""
