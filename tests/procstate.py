"""What a process is doing, read from /proc: the honest check that a writer is held.

A writer that has merely not finished yet (a slow ``dd``) is not proof of a freeze; a
writer asleep in state D on the superblock's freeze lock is. ``freeze_blocked`` waits,
bounded, for exactly that state instead of sleeping and hoping.
"""

from __future__ import annotations

import time

# Writers of a frozen filesystem sleep on the superblock's per-CPU rw-semaphore
# (sb_start_write / mnt_want_write -> percpu_down_read).
FREEZE_WAIT_CHANNEL = "percpu_rwsem_wait"


def process_state(pid: int) -> str | None:
    """The one-letter scheduler state of ``pid``, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def wait_channel(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def freeze_blocked(pid: int, timeout: float = 15.0) -> bool:
    """True once ``pid`` sleeps uninterruptibly on a filesystem freeze; False if it
    exits, turns zombie or is still not blocked when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = process_state(pid)
        if state is None or state in "ZX":
            return False
        if state == "D" and wait_channel(pid) == FREEZE_WAIT_CHANNEL:
            return True
        time.sleep(0.02)
    return False
