"""Negotiated IC versions from the kernel log.

hv_utils logs each negotiation ("hv_utils: Heartbeat IC version 3.0"; likewise
Shutdown, TimeSync, KVP, VSS); sysfs has no such attribute. ``/dev/kmsg``
hands out one record per read() and EAGAIN at the end when opened
non-blocking. Reading it needs root where dmesg_restrict is set; records
overwritten since boot are simply not there.
"""

from __future__ import annotations

import errno
import os
import re

from hvguest.paths import Paths

_IC = re.compile(r"\b(Heartbeat|Shutdown|TimeSync|KVP|VSS|FCopy) IC version (\d+)\.(\d+)")
_SERVICE = {"Heartbeat": "heartbeat", "Shutdown": "shutdown", "TimeSync": "timesync",
            "KVP": "kvp", "VSS": "vss", "FCopy": "fcopy"}
_MAX_READS = 200_000  # the ring holds far fewer records; a bound against a device that never ends


def ic_versions(paths: Paths, unreadable: list[str] | None = None) -> dict[str, str]:
    """service -> "major.minor" of the last negotiation logged (empty when unknown)."""
    path = os.path.join(paths.dev, "kmsg")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if unreadable is not None:
            unreadable.append(f"{path}: {exc.strerror or exc} (kernel log: IC versions)")
        return {}
    found: dict[str, str] = {}
    pending = b""
    try:
        for _ in range(_MAX_READS):
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten under us: go on
                    continue
                if exc.errno == errno.EINVAL:
                    break
                raise
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _match(line, found)
        _match(pending, found)
    except OSError as exc:
        if unreadable is not None:
            unreadable.append(f"{path}: {exc.strerror or exc} (kernel log: IC versions)")
    finally:
        os.close(fd)
    return found


def _match(line: bytes, found: dict[str, str]) -> None:
    if line.startswith(b" "):  # continuation (KEY=value) lines of a record
        return
    text = line.split(b";", 1)[-1].decode("utf-8", "replace")
    m = _IC.search(text)
    if m:
        found[_SERVICE[m.group(1)]] = f"{int(m.group(2))}.{int(m.group(3))}"
