"""hv_utils_transport: the character-device half of the KVP, VSS and legacy FCOPY drivers.

Semantics modelled (drivers/hv/hv_utils_transport.c):

* one opener at a time (second ``open`` -> -EBUSY); DESTROY -> -EBADF;
* ``read`` returns the whole queued message or blocks; a buffer smaller than the
  message -> -EINVAL and the message stays queued; after a successful read the
  one-shot ``on_read`` callback runs (it finishes a registration);
* ``write`` hands the whole buffer to the service as one message;
* at most one outbound message: queuing a second fails (-EFAULT) and the service
  fails its host transaction;
* ``release`` -> mode INIT, queued message dropped, service ``on_reset``;
* ``destroy`` -> POLLERR|POLLHUP, reads and writes -EBADF.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable
from enum import IntEnum

from hvguest.sim.device import POLLERR, POLLHUP, POLLIN, POLLRDNORM, WOULD_BLOCK


class Mode(IntEnum):
    INIT = 0
    NETLINK = 1
    CHARDEV = 2
    DESTROY = 3


class UtilTransport:
    """Implements ``hvguest.sim.device.Device`` for ``/dev/vmbus/<name>``."""

    honours_nonblock = False  # hvt_op_read() blocks even for O_NONBLOCK openers

    def __init__(
        self,
        name: str,
        on_msg: Callable[[bytes], int],
        on_reset: Callable[[], None],
    ) -> None:
        self.name = name
        self._on_msg = on_msg
        self._on_reset = on_reset
        self.mode = Mode.INIT
        self.owner: int | None = None
        self.outmsg: bytes | None = None
        self._on_read: Callable[[], None] | None = None
        self._waker: Callable[[], None] = lambda: None
        self.opens = 0
        # The daemon's last reads and writes (size, first bytes), for debugging.
        self.trace: deque[tuple[str, int, int, int, str]] = deque(maxlen=64)

    # -- Device ---------------------------------------------------------------
    def set_waker(self, waker: Callable[[], None]) -> None:
        self._waker = waker

    def open(self, handle: int) -> int:
        if self.mode == Mode.DESTROY:
            return -errno.EBADF
        if self.mode == Mode.CHARDEV:
            return -errno.EBUSY
        reset = self.mode == Mode.NETLINK
        self.mode = Mode.CHARDEV
        self.owner = handle
        self.opens += 1
        if reset:
            self._reset()
        return 0

    def read(self, handle: int, size: int) -> bytes | int:
        if self.mode == Mode.DESTROY:
            return -errno.EBADF
        if self.outmsg is None:
            if self.mode != Mode.CHARDEV or handle != self.owner:
                return -errno.EAGAIN
            return WOULD_BLOCK
        if size < len(self.outmsg):
            return -errno.EINVAL
        msg, self.outmsg = self.outmsg, None
        self.trace.append(("read", handle, size, len(msg), msg[:4].hex()))
        on_read, self._on_read = self._on_read, None
        if on_read is not None:
            on_read()
        return msg

    def write(self, handle: int, data: bytes) -> int:
        if self.mode == Mode.DESTROY:
            return -errno.EBADF
        self.trace.append(("write", handle, len(data), 0, bytes(data[:4]).hex()))
        rc = self._on_msg(bytes(data))
        return rc if rc < 0 else len(data)

    def poll(self, handle: int) -> int:
        if self.mode == Mode.DESTROY:
            return POLLERR | POLLHUP
        return POLLIN | POLLRDNORM if self.outmsg is not None else 0

    def release(self, handle: int) -> None:
        if handle != self.owner:
            return  # a failed opener (EBUSY) never owned the device
        if self.mode != Mode.DESTROY:
            self.mode = Mode.INIT
        self.owner = None
        self._reset()

    # -- kernel side ----------------------------------------------------------
    def send(self, msg: bytes, on_read: Callable[[], None] | None = None) -> int:
        """hvutil_transport_send: 0, -EINVAL (no reader) or -EFAULT (slot busy)."""
        if self.mode != Mode.CHARDEV:
            return -errno.EINVAL
        if self.outmsg is not None:
            return -errno.EFAULT
        self.outmsg = bytes(msg)
        self._on_read = on_read
        self._waker()
        return 0

    def destroy(self) -> None:
        """Module unload / channel removal: wake readers with POLLERR|POLLHUP."""
        self.mode = Mode.DESTROY
        self._waker()

    @property
    def is_open(self) -> bool:
        return self.mode == Mode.CHARDEV

    def _reset(self) -> None:
        self.outmsg = None
        self._on_reset()
        self._waker()
