"""Device transports: /dev/vmbus character devices and the UIO ring (fcopy >= 6.10)."""

from hvguest.transport.base import Transport

__all__ = ["Transport"]
