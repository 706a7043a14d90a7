"""hvguest.wire"""
