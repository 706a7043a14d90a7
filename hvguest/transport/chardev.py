"""The /dev/vmbus/hv_* character devices (KVP, VSS, legacy fcopy).

Kernel semantics (hv_utils_transport): one opener at a time (EBUSY otherwise),
every write is one whole message, every read returns one whole queued message,
O_NONBLOCK is ignored, and poll() reports POLLIN only while a message is queued.
We therefore always poll() before read(): a blocked read() cannot be woken and,
on FUSE-served devices, would also block a concurrent write on the same fd.

The path may instead name a unix SOCK_SEQPACKET socket (rootless simulator);
record boundaries give the same one-message-per-read/write semantics.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Self

from hvguest.errors import TransportError, WireError
from hvguest.paths import Paths
from hvguest.transport.base import Opens

log = logging.getLogger(__name__)

REGISTER_TIMEOUT = 10.0

# hv_do_fcopy is 6196 bytes, but COMPLETE/CANCEL carry the host's whole IC
# payload; the kernel's receive buffer (8192) bounds every message, so a read of
# that size never fails with EINVAL (which would leave the message queued).
FCOPY_READ_SIZE = 8192

_ERR_EVENTS = select.POLLERR | select.POLLHUP | select.POLLNVAL


@dataclass(eq=False)
class CharDevTransport(Opens):
    """One registered connection to a /dev/vmbus/hv_* device (or simulator socket).
    ``holder``: who likely holds a busy device (default hv_<name>_daemon)."""

    path: str
    _: KW_ONLY
    register: bytes
    read_size: int
    check_echo: Callable[[bytes], str]
    name: str
    holder: str = ""
    register_timeout: float = REGISTER_TIMEOUT
    version: str | None = field(default=None, init=False)
    is_socket: bool = field(default=False, init=False)
    _fd: int | None = field(default=None, init=False)
    _sock: socket.socket | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.holder = self.holder or f"hv_{self.name}_daemon"

    # -- lifecycle -------------------------------------------------------

    def open(self) -> Self:
        """Open the device, register and check the echo. Returns self."""
        if self._fd is not None:
            raise TransportError(f"{self.path}: already open")
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise TransportError(self._absent_message()) from None
        except OSError as exc:
            raise TransportError(f"{self.path}: cannot stat: {exc.strerror}") from exc
        if stat.S_ISSOCK(st.st_mode):
            self._connect()
        else:
            self._open_device()
        try:
            self._register()
        except BaseException:
            self.close()
            raise
        log.debug("%s registered, version %s", self.path, self.version)
        return self

    def reopen(self) -> None:
        """Close, open and register again (after a read/write error)."""
        self.close()
        self.open()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        elif self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self._sock = None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int:
        if self._fd is None:
            raise TransportError(f"{self.path}: not open")
        return self._fd

    # -- messages --------------------------------------------------------

    def read_packet(self, timeout: float | None = 0.0) -> bytes:
        """Return one whole message, or b"" when none is ready within ``timeout``
        seconds (0: do not wait — the caller polled already; None: wait)."""
        fd = self.fileno()
        events = self._poll(fd, timeout)
        if not events:
            return b""
        if not events & select.POLLIN and events & _ERR_EVENTS:
            raise TransportError(f"{self.path}: device is going away (poll {events:#x})")
        return self.read_ready()

    def read_ready(self) -> bytes:
        """The message the caller's poll just reported, read at once: one system
        call instead of poll + read. ``read_size`` bounds it; the kernel queues one
        message at a time, so the read cannot block."""
        try:
            data = os.read(self.fileno(), self.read_size)
        except (InterruptedError, BlockingIOError):
            return b""
        except OSError as exc:
            raise self._read_error(exc, self.read_size) from exc
        if not data and self.is_socket:
            raise TransportError(f"{self.path}: peer closed the connection")
        return data

    def read_into(self, buffer: bytearray) -> int:
        """Block until the kernel queues a message (read() ignores O_NONBLOCK) and
        read it into ``buffer``: its length, 0 for a wake-up with nothing queued.
        For a thread that owns the device: no poll round trip, no allocation."""
        try:
            length = os.readv(self.fileno(), (buffer,))
        except (InterruptedError, BlockingIOError):
            return 0
        except OSError as exc:
            raise self._read_error(exc, len(buffer)) from exc
        if not length and self.is_socket:
            raise TransportError(f"{self.path}: peer closed the connection")
        return length

    def _read_error(self, exc: OSError, size: int) -> TransportError:
        if exc.errno == errno.EINVAL:
            return TransportError(
                f"{self.path}: queued message is larger than the {size}-byte read buffer"
            )
        return TransportError(f"{self.path}: read failed: {exc.strerror}")

    def write_packet(self, data: bytes) -> None:
        fd = self.fileno()
        try:
            n = os.write(fd, data)
        except OSError as exc:
            raise TransportError(
                f"{self.path}: write of {len(data)} bytes failed: {exc.strerror}"
            ) from exc
        if n != len(data):
            raise TransportError(f"{self.path}: short write, {n} of {len(data)} bytes")

    # -- internals -------------------------------------------------------

    def _absent_message(self) -> str:
        return (
            f"{self.path}: device absent: the host does not offer the service"
            " or hv_utils is not loaded"
        )

    def _open_device(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise TransportError(
                    f"{self.path}: device busy: held by another process,"
                    f" e.g. the distribution's {self.holder}"
                ) from exc
            if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
                raise TransportError(self._absent_message()) from exc
            raise TransportError(f"{self.path}: cannot open: {exc.strerror}") from exc
        self.is_socket = False

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EBUSY:
                raise TransportError(
                    f"{self.path}: device busy: held by another process,"
                    f" e.g. the distribution's {self.holder}"
                ) from exc
            raise TransportError(f"{self.path}: cannot connect: {exc.strerror}") from exc
        self._sock = sock
        self._fd = sock.fileno()
        self.is_socket = True

    def _poll(self, fd: int, timeout: float | None) -> int:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        try:
            ready = poller.poll(ms)
        except InterruptedError:  # pragma: no cover - retried by Python (PEP 475)
            return 0
        return ready[0][1] if ready else 0

    def _register(self) -> None:
        try:
            self._handshake()
        except TransportError as exc:
            if not self.is_socket:
                raise
            # The simulator refuses a second opener (EBUSY) by closing the
            # connection: there is no errno to carry over a socket.
            raise TransportError(
                f"{exc}; the simulator ends the connection when the device is busy"
                f" (held by another process, e.g. the distribution's {self.holder}) or gone"
            ) from exc

    def _handshake(self) -> None:
        self.write_packet(self.register)
        deadline = time.monotonic() + self.register_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"{self.path}: no registration reply within {self.register_timeout:g} s"
                )
            echo = self.read_packet(timeout=remaining)
            if echo:
                break
        try:
            self.version = self.check_echo(echo)
        except TransportError:
            raise
        except Exception as exc:
            raise TransportError(f"{self.path}: bad registration reply: {exc}") from exc


# -- handshakes (protocol.md §2.1, §3.1, §4.2) -------------------------------


# Each service's wire module is imported when its device is wanted: a daemon serves
# one device, and the KVP codec alone is most of the three (resident memory).


def check_kvp_echo(echo: bytes) -> str:
    from hvguest.wire.kvp import (
        KVP_MSG_SIZE,
        KVP_OP_REGISTER1,
        REGISTER_VERSION_OFFSET,
        REGISTER_VERSION_SIZE,
    )

    if len(echo) != KVP_MSG_SIZE:
        raise TransportError(
            f"KVP registration reply is {len(echo)} bytes, expected {KVP_MSG_SIZE}"
        )
    if echo[0] != KVP_OP_REGISTER1:
        raise TransportError(
            f"KVP registration reply has operation {echo[0]}, expected {KVP_OP_REGISTER1}"
        )
    raw = echo[REGISTER_VERSION_OFFSET : REGISTER_VERSION_OFFSET + REGISTER_VERSION_SIZE]
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def _decoded_echo(decode: Callable[[bytes], int], echo: bytes) -> str:
    try:
        return str(decode(echo))
    except WireError as exc:
        raise TransportError(str(exc)) from exc


def check_vss_echo(echo: bytes) -> str:
    from hvguest.wire.vss import decode_vss_register_reply

    return _decoded_echo(decode_vss_register_reply, echo)


def check_fcopy_echo(echo: bytes) -> str:
    from hvguest.wire.fcopy import decode_fcopy_register_reply

    return _decoded_echo(decode_fcopy_register_reply, echo)


def _device(name: str) -> tuple[bytes, int, Callable[[bytes], str]]:
    """(registration message, read size, echo check) of kvp, vss or fcopy; KeyError
    for any other name. VSS: host FREEZE messages reach the daemon as 12-byte
    hv_vss_msg; the C daemon reads the 4-byte echo with a 12-byte buffer too."""
    if name == "kvp":
        from hvguest.wire.kvp import KVP_MSG_SIZE, KVP_REGISTER_MSG

        return KVP_REGISTER_MSG, KVP_MSG_SIZE, check_kvp_echo
    if name == "vss":
        from hvguest.wire.vss import VSS_MSG_SIZE, VSS_REGISTER_MSG

        return VSS_REGISTER_MSG, VSS_MSG_SIZE, check_vss_echo
    if name == "fcopy":
        from hvguest.wire.fcopy import FCOPY_REGISTER_MSG

        return FCOPY_REGISTER_MSG, FCOPY_READ_SIZE, check_fcopy_echo
    raise KeyError(name)


def device_transport(paths: Paths, name: str) -> CharDevTransport:
    """The (unopened) transport of /dev/vmbus/hv_<name>: kvp, vss or fcopy."""
    register, read_size, check_echo = _device(name)
    return CharDevTransport(
        paths.vmbus_device(f"hv_{name}"),
        register=register,
        read_size=read_size,
        check_echo=check_echo,
        name=name,
        holder=f"hv_{name}_daemon",
    )


def kvp_transport(paths: Paths) -> CharDevTransport:
    return device_transport(paths, "kvp")


def vss_transport(paths: Paths) -> CharDevTransport:
    return device_transport(paths, "vss")


def fcopy_transport(paths: Paths) -> CharDevTransport:
    return device_transport(paths, "fcopy")


def open_kvp(paths: Paths) -> CharDevTransport:
    """Open and register /dev/vmbus/hv_kvp; ``.version`` is e.g. "3.1"."""
    return kvp_transport(paths).open()


def open_vss(paths: Paths) -> CharDevTransport:
    """Open and register /dev/vmbus/hv_vss; ``.version`` is "129"."""
    return vss_transport(paths).open()


def open_fcopy(paths: Paths) -> CharDevTransport:
    """Open and register /dev/vmbus/hv_fcopy (kernels <= 6.9); ``.version`` is "1"."""
    return fcopy_transport(paths).open()
