"""The interface between the simulator's device front ends and its kernel models.

A front end (the FUSE server, or the rootless SOCK_SEQPACKET server) turns a
daemon's open/read/write/poll/close on ``/dev/vmbus/<name>`` or ``/dev/uioN`` into
calls on a ``Device``. A kernel model (hv_kvp, hv_snapshot, hv_fcopy,
uio_hv_generic) implements ``Device``. All calls happen on the simulator's single
event-loop thread; nothing here blocks.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Protocol

# read() returns this when nothing is queued: the front end parks the request and
# retries it after the device calls its wake-up callback (a blocking read).
WOULD_BLOCK = -errno.EAGAIN

POLLIN = 0x001
POLLERR = 0x008
POLLHUP = 0x010
POLLRDNORM = 0x040


class Device(Protocol):
    """One simulated character device.

    ``handle`` identifies one open file description (one ``open()``), so a device
    can refuse a second opener with ``-EBUSY`` and know which opener closes.
    Return values follow the kernel: a non-negative count or ``-errno``.
    """

    name: str
    # Optional (front ends read it with getattr, default False): True if a read with
    # nothing queued fails with EAGAIN for an O_NONBLOCK opener (uio_hv_generic). The
    # hv_utils_transport misc devices block even then, so the front end parks the read.
    honours_nonblock: bool

    def open(self, handle: int) -> int:
        """0 on success or -errno (e.g. -EBUSY for a second opener)."""
        ...

    def read(self, handle: int, size: int) -> bytes | int:
        """The whole next message, ``WOULD_BLOCK`` to block, or -errno."""
        ...

    def write(self, handle: int, data: bytes) -> int:
        """Bytes accepted (len(data)) or -errno."""
        ...

    def poll(self, handle: int) -> int:
        """Current poll mask (POLLIN | POLLRDNORM when a message is queued)."""
        ...

    def release(self, handle: int) -> None:
        """The last close of that open file description."""
        ...

    def set_waker(self, waker: Callable[[], None]) -> None:
        """Called once by the front end; the device calls ``waker()`` whenever its
        readability or poll state may have changed (message queued, destroyed)."""
        ...
