"""VMBus: the devices the host offers (sysfs inventory), what changed between two scans,
and the negotiated IC versions from the kernel log.
"""
