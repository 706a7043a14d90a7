"""Time sync: the host's PTP clock and the guest clock's offset to it (ptp), chrony and the
NTP clients (chrony), the status of both (check).
"""
