"""Host liveness from the heartbeat channel's sysfs counters.

The host sends a heartbeat request every few seconds; each one is an
interrupt on the channel (``interrupts``) and our kernel's reply a signal
(``events``). If neither counter moves for ``threshold`` polls, the host has
lost contact with us (or stopped the Heartbeat service).
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN = "unknown"  # no reading yet, or no channel
CONTACT = "contact"
NO_CONTACT = "no-contact"


@dataclass
class Liveness:
    threshold: int
    last: tuple[int, int] | None = None
    stalls: int = 0
    state: str = UNKNOWN
    last_contact: str | None = None  # time of the last poll that saw the counters move

    def update(self, counters: tuple[int, int] | None, now: str) -> str:
        """Feed (interrupts, events); returns the new state."""
        if counters is None:
            self.last, self.stalls, self.state = None, 0, UNKNOWN
            return self.state
        if self.last is None:
            self.last = counters
            return self.state
        if counters != self.last:
            self.last = counters
            self.stalls = 0
            self.state = CONTACT
            self.last_contact = now
        else:
            self.stalls += 1
            if self.stalls >= self.threshold:
                self.state = NO_CONTACT
        return self.state

    def as_dict(self) -> dict[str, object]:
        return {
            "contact": self.state,
            "last_contact": self.last_contact,
            "stalled_polls": self.stalls,
        }
