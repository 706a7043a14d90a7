"""Heartbeat: the host's liveness from the heartbeat channel's counters, and the
"heartbeat" settings (hvguest-heartbeatd, the status commands).
"""
