"""Who holds a lock on a file: ``/proc/locks`` (proc root injectable), read-only.

Used when a pool file stays locked past the bounded wait, so that the log and
``hvguestctl status`` can name the process (pid, user, command) instead of only
saying "busy". A line of ``/proc/locks`` reads::

    1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF
    1: -> FLOCK  ADVISORY  WRITE 99 08:01:1234 0 EOF     (a waiter, not a holder)

pids are those of the pid namespace the proc root belongs to. On overlayfs the lock
is listed under the upper filesystem's device, not the one ``stat()`` shows: when no
line matches device and inode, lines with the same inode number are taken instead
(a diagnostic, never a decision). The command name is
whatever the process chose: it is returned raw and must be escaped when shown.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

# /proc/locks kinds per lock family: flock(2) vs. POSIX record locks (fcntl/lockf;
# OFD locks conflict with them too).
KINDS = {"flock": ("FLOCK",), "posix": ("POSIX", "OFDLCK")}


@dataclass(frozen=True)
class LockHolder:
    pid: int
    uid: int | None
    user: str | None
    command: str | None
    kind: str  # FLOCK / POSIX / OFDLCK
    mode: str  # READ / WRITE

    def describe(self) -> str:
        who = self.user if self.user is not None else f"uid {self.uid}" if self.uid is not None \
            else "unknown user"
        cmd = f", command {self.command!r}" if self.command else ""
        return f"pid {self.pid} (user {who}{cmd})"

    def as_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "uid": self.uid, "user": self.user, "command": self.command,
                "kind": self.kind, "mode": self.mode}


def _read(path: str, limit: int = 1 << 20) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _uid(proc: str, pid: int) -> int | None:
    text = _read(os.path.join(proc, str(pid), "status"), 8192) or ""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1])
    return None


def _user(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def find_holders(proc: str, dev: int, ino: int, *, kind: str) -> list[LockHolder]:
    """Processes holding a ``kind`` ("flock" or "posix") lock on the file (dev, ino)."""
    text = _read(os.path.join(proc, "locks"))
    if text is None:
        return []
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    kinds = KINDS[kind]
    lines = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->" or fields[1] not in kinds:
            continue
        lines.append(fields)
    exact = [f for f in lines if f[5] == wanted]
    same_ino = [f for f in lines if f[5].rsplit(":", 1)[-1] == str(ino)]
    out: list[LockHolder] = []
    seen: set[int] = set()
    for fields in exact or same_ino:
        lock_kind, mode, pid_text = fields[1], fields[3], fields[4]
        try:
            pid = int(pid_text)
        except ValueError:
            continue
        if pid <= 0 or pid in seen:  # -1: an OFD lock with no single owner
            continue
        seen.add(pid)
        uid = _uid(proc, pid)
        comm = _read(os.path.join(proc, str(pid), "comm"), 256)
        out.append(LockHolder(pid, uid, _user(uid), comm.rstrip("\n") if comm else None,
                              lock_kind, mode))
    return out
