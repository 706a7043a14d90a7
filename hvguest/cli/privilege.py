"""Commands that change the system check first that they can, and say so in one line.

Run by an unprivileged user, ``timesync setup``, ``shutdown-hooks run`` and ``vss thaw``
refuse before reading or changing anything (exit 1 through ``HvGuestError``); ``kvp
set``/``kvp delete`` refuse when the pool file (or the directory that would hold it)
is not writable by the caller, which for the real pools means root.
"""

from __future__ import annotations

import os

from hvguest.errors import HvGuestError


class NeedsRootError(HvGuestError):
    """The command must be run as root."""


def require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise NeedsRootError(
            f"{command} needs root (running as uid {os.geteuid()}): "
            f"run it with sudo; nothing was changed"
        )


def require_writable(command: str, path: str) -> None:
    """``path`` (a file, or the nearest existing directory above it) writable by us."""
    target = path
    while not os.path.exists(target):
        parent = os.path.dirname(target)
        if parent == target:
            break
        target = parent
    if not os.access(target, os.W_OK):
        raise NeedsRootError(
            f"{command} needs root: {target} is not writable by uid"
            f" {os.geteuid()}; run it with sudo; nothing was changed"
        )
