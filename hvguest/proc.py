"""What runs on the machine, from the injectable /proc: PID 1 and process names."""

from __future__ import annotations

import contextlib
import os

from hvguest.paths import Paths


def systemd_running(paths: Paths) -> bool:
    """PID 1 is systemd (read from <proc>/1/comm)."""
    try:
        with open(os.path.join(paths.proc, "1", "comm"), encoding="utf-8") as f:
            return f.read().strip() == "systemd"
    except OSError:
        return False


def _mount_ns(paths: Paths, pid: str) -> str | None:
    try:
        return os.readlink(os.path.join(paths.proc, pid, "ns", "mnt"))
    except OSError:
        return None


def processes(paths: Paths, *, own_mount_ns: bool = False) -> dict[int, str]:
    """PID -> ``comm`` of every process (cut at 15 characters by the kernel).

    ``own_mount_ns``: only those in our mount namespace (a daemon in a container
    sees another /dev, so it cannot hold our devices), or whose namespace we
    cannot see."""
    found: dict[int, str] = {}
    try:
        entries = os.listdir(paths.proc)
    except OSError:
        return found
    own = _mount_ns(paths, "self") if own_mount_ns else None
    for entry in entries:
        if entry.isdigit():
            ns = _mount_ns(paths, entry) if own is not None else None
            if ns is not None and ns != own:
                continue
            with contextlib.suppress(OSError):
                with open(os.path.join(paths.proc, entry, "comm"), encoding="utf-8") as f:
                    found[int(entry)] = f.read().strip()
    return found


def process_names(paths: Paths, *, own_mount_ns: bool = False) -> set[str]:
    """The ``comm`` of every process (see ``processes``)."""
    return set(processes(paths, own_mount_ns=own_mount_ns).values())
