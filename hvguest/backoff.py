"""Exponential back-off for re-opening a device after it failed.

One policy for every daemon (hvguest-kvpd, -vssd and -fcopyd on either transport):
a device that fails again as soon as it is re-opened (a rescinded channel whose node
still opens, a ring the host keeps corrupting) must not cost a CPU. The first
re-open waits ``initial`` seconds, each further one twice as long up to ``maximum``;
a healthy exchange (a request served and answered) starts over. A successful open
alone does not: a node that opens and fails at once would otherwise loop.
"""

from __future__ import annotations

INITIAL_DELAY = 0.1
MAX_DELAY = 30.0


class Backoff:
    def __init__(self, initial: float = INITIAL_DELAY, maximum: float = MAX_DELAY) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError(f"back-off needs 0 < initial ({initial}) <= maximum ({maximum})")
        self.initial = initial
        self.maximum = maximum
        self.failures = 0  # consecutive failures since the last healthy exchange

    def next_delay(self) -> float:
        """The wait before the next re-open; counts one more failure."""
        delay = min(self.maximum, self.initial * 2.0 ** min(self.failures, 64))
        self.failures += 1
        return delay

    def healthy(self) -> None:
        """A request was served: the next failure waits ``initial`` again."""
        self.failures = 0
