"""sd_notify(3): READY=1, STATUS=, WATCHDOG=1, STOPPING=1.

$NOTIFY_SOCKET and $WATCHDOG_USEC are read on every call, so tests can point
them at a socket in a temporary directory. A unix socket (what systemd gives a
service) gets one datagram from here; other families (vsock) go through libsystemd,
loaded only then: python-systemd's module and the library cost about 0.8 MB of
resident memory that no daemon needs otherwise.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket

log = logging.getLogger(__name__)


def _socket_address(raw: str) -> str | bytes | None:
    if raw.startswith("@"):
        # Abstract namespace: a leading NUL instead of '@'.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # vsock and other families: leave them to libsystemd


def _raw_notify(raw: str, state: str) -> bool:
    address = _socket_address(raw)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", raw, exc)
        return False
    return True


def notify(state: str) -> bool:
    """Send ``state`` (e.g. "READY=1\\nSTATUS=serving") to the service manager.

    Returns False when not started by a service manager or when sending failed.
    """
    raw = os.environ.get("NOTIFY_SOCKET")
    if not raw:
        return False
    if _socket_address(raw) is None:
        return _libsystemd_notify(state)
    # Sent directly for unix sockets: libsystemd reads its own copy of the
    # environment, and the message is a single datagram either way.
    return _raw_notify(raw, state)


def _libsystemd_notify(state: str) -> bool:
    try:  # python-systemd ships no type information: imported by name
        sd_daemon = importlib.import_module("systemd.daemon")
    except ImportError:  # pragma: no cover - dependency of the package
        return False
    return bool(sd_daemon.notify(state))


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds (WATCHDOG_USEC), or None when disabled
    or meant for another process (WATCHDOG_PID)."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000
