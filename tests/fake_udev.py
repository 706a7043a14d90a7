"""A UdevWatcher stand-in for daemon tests (no netlink needed).

Importable from any test module: ``tests/`` is on sys.path through tests/conftest.py.
"""

from __future__ import annotations

import os

from hvguest.errors import TransportError
from hvguest.transport.udev import UdevEvent


class FakeWatcher:
    """A pipe made readable whenever events are queued; ``broken`` makes the next
    drain fail the way a real monitor's read error does."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.queue: list[UdevEvent] = []
        self.broken = False
        self.closed = False

    def push(self, *events: UdevEvent) -> None:
        self.queue.extend(events)
        os.write(self.w, b"x")

    def fileno(self) -> int:
        return self.r

    def drain(self) -> list[UdevEvent]:
        try:
            os.read(self.r, 4096)
        except BlockingIOError:
            pass
        if self.broken:
            raise TransportError("reading udev events failed: [Errno 105] No buffer space")
        out, self.queue = self.queue, []
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.r)
            os.close(self.w)
