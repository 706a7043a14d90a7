"""Application health: systemd unit states -> ok / degraded / critical (units), published
to the host in KVP pool 1 (publish).
"""
