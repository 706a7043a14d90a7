"""Exception hierarchy shared by every hvguest layer.

Messages name the item, the place and the limit, e.g.
"KVP key is 600 bytes, limit 512 (pool 1)".
"""

from __future__ import annotations


class HvGuestError(Exception):
    """Base of every error hvguest raises on purpose."""


class HostProtocolError(HvGuestError):
    """The host (or the kernel on its behalf) sent data we cannot accept."""


class WireError(HostProtocolError):
    """A byte buffer does not decode: wrong size or a field out of range.

    ``field`` names the offending field, ``limit`` the bound it broke.
    """

    def __init__(self, message: str, *, field: str | None = None, limit: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.limit = limit


class LocalUsageError(HvGuestError):
    """Misuse on this machine: bad command-line argument, value too long, ..."""


class ConfigError(HvGuestError):
    """The configuration file is invalid. ``where`` is "file:line" when known."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


class HookError(HvGuestError):
    """A hook script failed: its command, exit code and the tail of its stderr."""

    def __init__(
        self, command: str, returncode: int | None, stderr_tail: str, reason: str = ""
    ) -> None:
        what = reason or (f"exited with {returncode}" if returncode is not None else "failed")
        msg = f"hook {command} {what}"
        if stderr_tail:
            msg += f": {stderr_tail.strip()}"
        super().__init__(msg)
        self.command = command
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class TransportError(HvGuestError):
    """The device or ring failed; the caller reopens and re-registers."""
