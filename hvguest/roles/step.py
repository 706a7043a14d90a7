"""The one contract every role follows.

A role is a pure state machine. The daemon gives it one decoded message (or the
outcome of work it did on the role's behalf) and the time; the role answers with a
``Step``: the reply bytes for the device, if one is due now, and the actions the
daemon must carry out (log a line, write a pool record, freeze file systems, write a
fragment). The role itself performs no I/O, reads no clock and raises nothing for
bad input from the host: bad input gets a failure reply. It raises
``LocalUsageError`` only when the daemon drives it wrongly (a message its state does
not accept), naming the state and the message, as h11 does.

    role.handle(message, now) -> Step
    role.complete(outcome, now) -> Step      # the result of an action it asked for

State transitions are tables keyed by ``(state, event)``; ``Transitions.next``
refuses a missing entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from hvguest.errors import LocalUsageError

A = TypeVar("A")
S = TypeVar("S", bound=Enum)


@dataclass(frozen=True, slots=True)
class Log:
    """Log ``message % args`` at ``level``; ``fields`` go to the journal as
    HVGUEST_<NAME>=value. The daemon escapes and throttles; the role only says."""

    level: int
    message: str
    args: tuple[object, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step(Generic[A]):
    """What one message or outcome produced: ``reply`` (None: nothing to send now,
    e.g. while an action the reply depends on is outstanding) and ``actions``, in
    the order the daemon must carry them out."""

    reply: bytes | None = None
    actions: tuple[A, ...] = ()


class Transitions(Generic[S]):
    """``(state, event) -> next state``; anything not in the table is misuse."""

    def __init__(self, role: str, table: Mapping[tuple[S, str], S]) -> None:
        self.role = role
        self._table = dict(table)

    def next(self, state: S, event: str) -> S:
        try:
            return self._table[(state, event)]
        except KeyError:
            raise LocalUsageError(
                f"{self.role} role: {event!r} is not accepted in state {state.name}"
            ) from None

    def accepts(self, state: S, event: str) -> bool:
        return (state, event) in self._table
