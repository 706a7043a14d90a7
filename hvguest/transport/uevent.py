"""The kernel's uevents, read from its netlink socket with the standard library.

A uevent is one datagram: a header ``action@devpath`` then ``KEY=VALUE`` fields, each
ended by a NUL byte, e.g. ``add@/devices/virtual/net/eth1\\0ACTION=add\\0DEVPATH=...``.
The kernel multicasts them to group 1 of ``NETLINK_KOBJECT_UEVENT``; anyone may listen,
but sending to the group takes CAP_NET_ADMIN, and udevd re-sends its processed events to
group 2 in another format, which we never join. Even so, a datagram counts only when
its sender's port id is 0, the kernel's: a privileged process has a port id of its own
and cannot forge that, so everything else is dropped unread.

``parse_uevent`` is pure (bytes in, a typed event or None out) so that malformed and
hostile datagrams are tested without a socket. Values are decoded leniently (an
interface name may hold any byte but "/", ":" and white space): what is not UTF-8 is
kept as a backslash escape, so an event never fails to decode; whoever shows a value
escapes control characters (``hvguest.text.printable``).
"""

from __future__ import annotations

import errno
import socket
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1
# The kernel builds a uevent in a 2 KiB buffer (header and fields); a datagram longer
# than this is not one of its uevents.
MAX_UEVENT = 4096
# Room for a storm (every channel of a rescinded device) between two reads; the kernel
# may clamp it (net.core.rmem_max), which only makes an overflow likelier, and an
# overflow is reported, never silent.
RECEIVE_BUFFER = 1 << 20
# Receiver.next()'s answer for a datagram a process sent (never parsed).
DROPPED = b""
ACTIONS = frozenset({"add", "remove", "change", "move", "online", "offline", "bind", "unbind"})
# Enough to tell what happened; the rest of the environment is not kept.
KEPT_PROPERTIES = ("DEVNAME", "DEVTYPE", "DRIVER", "IFINDEX", "INTERFACE", "MODALIAS", "SEQNUM")


@dataclass(frozen=True)
class UdevEvent:
    action: str  # add, remove, change, move, bind, unbind...; OVERFLOW for lost events
    subsystem: str
    sys_name: str
    sys_path: str
    properties: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _valid_devpath(devpath: str) -> bool:
    if not devpath.startswith("/") or devpath.endswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in devpath[1:].split("/"))


def parse_uevent(data: bytes, sys_root: str = "/sys") -> UdevEvent | None:
    """The event in one kernel datagram, or None when it is not a well-formed uevent:
    no ``action@devpath`` header (udevd's "libudev" format, garbage), a field without
    "=", a header that disagrees with ACTION or DEVPATH, an unknown action, a devpath
    that is not an absolute path without "." or ".." components, no SUBSYSTEM."""
    if len(data) > MAX_UEVENT:
        return None
    header, _, body = data.partition(b"\0")
    head_action, at, head_devpath = header.partition(b"@")
    if not at:
        return None
    env: dict[str, str] = {}
    for item in body.split(b"\0"):
        if not item:
            continue  # the terminating NUL
        key, eq, value = item.partition(b"=")
        if not eq or not key:
            return None
        env[_text(key)] = _text(value)
    action, devpath, subsystem = env.get("ACTION"), env.get("DEVPATH"), env.get("SUBSYSTEM")
    if action is None or devpath is None or not subsystem:
        return None
    if action != _text(head_action) or devpath != _text(head_devpath):
        return None
    if action not in ACTIONS or not _valid_devpath(devpath) or "/" in subsystem:
        return None
    kept = {k: env[k] for k in KEPT_PROPERTIES if k in env}
    devname = kept.get("DEVNAME")
    if devname is not None and not devname.startswith("/"):
        kept["DEVNAME"] = "/dev/" + devname  # as libudev shows it: the kernel's is relative
    return UdevEvent(
        action=action,
        subsystem=subsystem,
        # The kernel turns "/" in a device name into "!" in sysfs; libudev turns it back.
        sys_name=devpath.rsplit("/", 1)[1].replace("!", "/"),
        sys_path=sys_root + devpath,
        properties=types.MappingProxyType(kept),
    )


def open_uevent_socket() -> socket.socket:
    """A non-blocking socket joined to the kernel's uevent group; OSError when the
    sandbox has no AF_NETLINK (RestrictAddressFamilies=) or no such protocol."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK
                         | socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        except OSError:
            pass  # the default buffer works; overflows are reported
        sock.bind((0, KERNEL_GROUP))
    except OSError:
        sock.close()
        raise
    return sock


class Receiver:
    """Reads datagrams from a uevent socket (or a test's stand-in ``recv``)."""

    def __init__(self, recvfrom: Callable[[int], tuple[bytes, object]]) -> None:
        self._recvfrom = recvfrom
        self.foreign = 0  # datagrams dropped because the kernel did not send them

    def next(self) -> bytes | None:
        """One datagram: its bytes if the kernel sent it, ``DROPPED`` (b"") if a process
        did, None when none is queued. ENOBUFS (events lost) and other receive errors
        raise OSError."""
        try:
            data, address = self._recvfrom(MAX_UEVENT + 1)
        except (BlockingIOError, InterruptedError):
            return None
        if isinstance(address, tuple) and address and address[0] == 0:
            return data
        self.foreign += 1
        return DROPPED


def receive_error_lost_events(exc: OSError) -> bool:
    """True when the error says the kernel dropped events (our buffer was full)."""
    return exc.errno == errno.ENOBUFS
