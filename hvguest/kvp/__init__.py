"""hvguest.kvp"""
