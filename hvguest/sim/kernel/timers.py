"""A tiny timer queue driven by the simulator's event loop (or a test's fake clock)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class Timer:
    deadline: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> bool:
        """Cancel; True if the timer had not fired yet (like cancel_delayed_work)."""
        was_pending = not self.cancelled
        self.cancelled = True
        return was_pending


class TimerQueue:
    """Timers on an externally supplied clock.

    ``scale`` multiplies every delay, so tests can shrink the kernel's 30 s and 900 s
    deadlines without changing the models.
    """

    def __init__(self, clock: Callable[[], float], *, scale: float = 1.0) -> None:
        self._clock = clock
        self.scale = scale
        self._heap: list[Timer] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._clock()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self._clock() + delay * self.scale, next(self._seq), callback)
        heapq.heappush(self._heap, timer)
        return timer

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].deadline if self._heap else None

    def run_due(self) -> int:
        """Fire every timer whose deadline has passed; returns how many fired."""
        fired = 0
        now = self._clock()
        while self._heap and self._heap[0].deadline <= now:
            timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            timer.cancelled = True  # fired: a later cancel() reports False
            timer.callback()
            fired += 1
        return fired


class FakeClock:
    """A settable clock for tests."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
