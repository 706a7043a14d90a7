"""hvguest.vss"""
