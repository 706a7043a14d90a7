"""File copy from the host: the protocol state machine (no I/O).

The one role contract (``hvguest.roles.step``): ``handle(message, now)`` takes a
decoded request (or ``Malformed``) and answers a ``Step``: either the reply (the
4-byte status of ``hvguest.wire.fcopy.fcopy_reply``: the legacy device takes it as
is, the UIO path puts it into the IC header) or file actions for the writer. The
daemon runs the actions and hands the result back with ``complete(Done(status),
now)``, which settles the state and answers the reply. ``complete`` also takes
``FragmentFailed`` (a fast-path write failed) and ``ChannelLost``. Log lines are
``Log`` actions. States and events are a ``Transitions`` table: a message the state
does not accept (a second request while actions are outstanding, an outcome
nothing asked for) raises ``LocalUsageError`` naming both.

``accept_write(offset, size)`` is the per-fragment fast path: for a WRITE that
continues the open transfer within its limits it answers True (write it, reply
HV_S_OK) with no Step built; anything else goes to ``handle()``.

Decisions (the reference daemons differ; see docs of hvguest-fcopyd):

* WRITE_TO_FILE is accepted anywhere inside ``[0, file_size)``, as by every guest
  daemon that talks to real hosts (they ``pwrite`` at the offset): a resend (after a
  late reply, say) overwrites, a gap reads as zeros, a zero-length WRITE changes
  nothing. Gaps and overlaps are counted in the transfer record and the first of
  each kind is logged with its offsets, so real hosts tell us if it ever happens.
* ``offset + size`` may not exceed the announced ``file_size`` nor ``max_file_size``
  (HV_E_FAIL, transfer abandoned). COMPLETE_FCOPY succeeds only when the highest end
  written equals ``file_size``; otherwise it is refused and nothing replaces the
  target (Microsoft's own tests compare the guest file's size with the source's).
* START_FILE_COPY while a transfer is open abandons the old transfer (nothing of it
  reaches its final name) and starts the new one: the host only starts a new copy
  after giving up on the previous one.
* WRITE/COMPLETE without a transfer: HV_E_FAIL, nothing written. CANCEL without a
  transfer: HV_S_OK (the kernel sends one on suspend whether or not a copy runs).
* After any failed WRITE the transfer is FAILED: its file is discarded at once, later
  WRITEs and COMPLETE are refused (HV_E_FAIL here; the daemon repeats the failed
  write's own status, e.g. HV_ERROR_DISK_FULL), CANCEL or a new START clears it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from hvguest.roles.fcopy_types import (
    Action,
    ChannelLost,
    CommitTarget,
    DiscardTarget,
    Done,
    FcopyStep,
    FragmentFailed,
    Malformed,
    Message,
    OpenTarget,
    Outcome,
    Transfer,
    WriteData,
)
from hvguest.roles.step import Log, Step, Transitions
from hvguest.wire.fcopy import (
    CREATE_PATH,
    OVER_WRITE,
    FcopyCancel,
    FcopyComplete,
    FcopyRequest,
    FcopyStart,
    FcopyWrite,
    fcopy_reply,
)
from hvguest.wire.fcopy_names import escape
from hvguest.wire.status import HvStatus, status_name

__all__ = [
    "Action", "ChannelLost", "CommitTarget", "DiscardTarget", "Done", "FcopyRole",
    "FcopyState", "FcopyStep", "FragmentFailed", "Malformed", "OpenTarget", "Transfer",
    "WriteData",
]

KNOWN_FLAGS = OVER_WRITE | CREATE_PATH
# logging's levels (a role does not import logging).
INFO, WARNING = 20, 30
_OK = int(HvStatus.HV_S_OK)
_FAIL = int(HvStatus.HV_E_FAIL)


class FcopyState(Enum):
    IDLE = "idle"
    OPENING = "opening"  # OpenTarget outstanding
    RECEIVING = "receiving"
    WRITING = "writing"  # WriteData outstanding
    COMMITTING = "committing"  # CommitTarget outstanding
    FAILED = "failed"


_S = FcopyState
# (states, event, next state). Events of handle(): the request classified (a WRITE
# beyond the announced size, a COMPLETE short of it); of complete(): the outcome.
_ROWS: tuple[tuple[tuple[FcopyState, ...], str, FcopyState], ...] = (
    ((_S.IDLE, _S.RECEIVING, _S.FAILED), "START", _S.OPENING),
    ((_S.IDLE, _S.RECEIVING, _S.FAILED), "START_TOO_BIG", _S.IDLE),
    ((_S.IDLE, _S.RECEIVING, _S.FAILED), "CANCEL", _S.IDLE),
    ((_S.IDLE,), "WRITE", _S.IDLE),  # refused
    ((_S.IDLE,), "COMPLETE", _S.IDLE),  # refused
    ((_S.IDLE,), "MALFORMED", _S.IDLE),
    ((_S.RECEIVING,), "WRITE", _S.WRITING),
    ((_S.RECEIVING,), "COMPLETE", _S.COMMITTING),
    ((_S.RECEIVING,), "COMPLETE_SHORT", _S.IDLE),
    ((_S.RECEIVING,), "WRITE_BEYOND", _S.FAILED),
    ((_S.RECEIVING, _S.FAILED), "MALFORMED", _S.FAILED),
    ((_S.RECEIVING,), "FRAGMENT_FAILED", _S.FAILED),
    ((_S.FAILED,), "WRITE", _S.FAILED),  # refused
    ((_S.FAILED,), "COMPLETE", _S.IDLE),  # refused; the next transfer may start
    ((_S.OPENING, _S.WRITING), "DONE", _S.RECEIVING),
    ((_S.COMMITTING,), "DONE", _S.IDLE),
    ((_S.OPENING, _S.COMMITTING), "DONE_FAILED", _S.IDLE),
    ((_S.WRITING,), "DONE_FAILED", _S.FAILED),
    (tuple(_S), "LOST", _S.IDLE),
)
TRANSITIONS = Transitions[FcopyState](
    "fcopy", {(state, event): to for states, event, to in _ROWS for state in states}
)

_OPS = {
    FcopyStart: "START_FILE_COPY",
    FcopyWrite: "WRITE_TO_FILE",
    FcopyComplete: "COMPLETE_FCOPY",
    FcopyCancel: "CANCEL_FCOPY",
}


@dataclass
class FcopyRole:
    """Sequencing and bounds of one fcopy channel."""

    max_file_size: int
    state: FcopyState = FcopyState.IDLE
    transfer: Transfer | None = None
    # Transfers that ended since the daemon last looked (it records and clears them).
    finished: list[Transfer] = field(default_factory=list)
    _write_end: int = 0  # bytes_done once the outstanding WriteData is done

    # -- the contract --------------------------------------------------------

    def handle(self, message: Message, now: float) -> FcopyStep:
        event = self._event(message)
        following = TRANSITIONS.next(self.state, event)  # refuses misuse before any change
        on_event: Callable[[Message, float], FcopyStep] = getattr(self, "_on_" + event.lower())
        step = on_event(message, now)
        self.state = following
        return step

    def complete(self, outcome: Outcome, now: float) -> FcopyStep:
        if isinstance(outcome, ChannelLost):
            event = "LOST"
        elif isinstance(outcome, FragmentFailed):
            event = "FRAGMENT_FAILED"
        else:
            event = "DONE" if outcome.status == _OK else "DONE_FAILED"
        following = TRANSITIONS.next(self.state, event)
        step = self._settle(outcome, now)
        self.state = following
        return step

    def accept_write(self, offset: int, size: int) -> bool:
        """Fast path for the common request: a WRITE that continues the open
        transfer where its data ends, within its limits. True: write the data now
        (report a failure with ``complete(FragmentFailed(...))``); False: pass the
        request to ``handle()`` (a resend, a gap, or a refusal)."""
        transfer = self.transfer
        if self.state is not FcopyState.RECEIVING or transfer is None:
            return False
        if offset != transfer.bytes_done:
            return False
        end = offset + size
        if end > transfer.file_size or end > self.max_file_size:
            return False
        transfer.bytes_done = end
        return True

    # -- events ----------------------------------------------------------------

    def _event(self, message: Message) -> str:
        transfer = self.transfer
        receiving = self.state is FcopyState.RECEIVING and transfer is not None
        if isinstance(message, FcopyWrite):
            if receiving and message.offset + len(message.data) > self._limit():
                return "WRITE_BEYOND"
            return "WRITE"
        if isinstance(message, FcopyStart):
            return "START_TOO_BIG" if message.file_size > self.max_file_size else "START"
        if isinstance(message, FcopyComplete):
            if receiving and transfer is not None and transfer.bytes_done != transfer.file_size:
                return "COMPLETE_SHORT"
            return "COMPLETE"
        if isinstance(message, FcopyCancel):
            return "CANCEL"
        return "MALFORMED"

    def _limit(self) -> int:
        assert self.transfer is not None
        return min(self.transfer.file_size, self.max_file_size)

    def _on_start(self, request: FcopyStart, now: float) -> FcopyStep:
        before = self._supersede(request, now)
        self._begin(request, now)
        open_target = OpenTarget(
            request.path_name,
            request.file_name,
            bool(request.copy_flags & OVER_WRITE),
            bool(request.copy_flags & CREATE_PATH),
            request.file_size,
        )
        return Step(None, (*before, open_target))

    def _on_start_too_big(self, request: FcopyStart, now: float) -> FcopyStep:
        before = self._supersede(request, now)
        transfer = self._begin(request, now)
        detail = f"file_size {request.file_size} exceeds the limit {self.max_file_size}"
        self._end(transfer, "refused", now, detail)
        return Step(fcopy_reply(_FAIL), before)

    def _supersede(self, request: FcopyStart, now: float) -> tuple[Action, ...]:
        before: tuple[Action, ...] = ()
        if self.state is FcopyState.RECEIVING:
            assert self.transfer is not None
            before = (
                Log(WARNING, "START of %s while %s is open: abandoning the open transfer",
                    (escape(request.file_name), self.transfer.target)),
                DiscardTarget("superseded by a new START"),
            )
            self._end(self.transfer, "superseded", now, "a new START arrived")
        if request.copy_flags & ~KNOWN_FLAGS:
            before += (
                Log(INFO, "fcopy START: ignoring unknown copy_flags bits %#x",
                    (request.copy_flags,)),
            )
        return before

    def _begin(self, request: FcopyStart, now: float) -> Transfer:
        self.transfer = Transfer(
            request.path_name, request.file_name, request.file_size, request.copy_flags, now
        )
        return self.transfer

    def _on_write(self, request: FcopyWrite, now: float) -> FcopyStep:
        if self.state is not FcopyState.RECEIVING:
            return self._refuse(request)
        transfer = self.transfer
        assert transfer is not None
        end = request.offset + len(request.data)
        before: tuple[Action, ...] = ()
        if request.data and request.offset != transfer.bytes_done:
            before = _note_irregular(transfer, request.offset, end)
        self._write_end = max(end, transfer.bytes_done)
        return Step(None, (*before, WriteData(request.offset, request.data)))

    def _on_write_beyond(self, request: FcopyWrite, now: float) -> FcopyStep:
        transfer = self.transfer
        assert transfer is not None
        end = request.offset + len(request.data)
        detail = (
            f"WRITE of {len(request.data)} bytes at offset {request.offset} ends at {end}, "
            f"beyond the announced file_size {transfer.file_size}"
            if end > transfer.file_size
            else f"WRITE ends at {end}, beyond the limit {self.max_file_size}"
        )
        return self._abandon(detail, "refused", now, _FAIL)

    def _on_complete(self, request: FcopyComplete, now: float) -> FcopyStep:
        if self.state is not FcopyState.RECEIVING:
            return self._refuse(request)
        return Step(None, (CommitTarget(),))

    def _on_complete_short(self, request: FcopyComplete, now: float) -> FcopyStep:
        assert self.transfer is not None
        done, size = self.transfer.bytes_done, self.transfer.file_size
        detail = f"COMPLETE when the data ends at {done} of {size} announced bytes"
        return self._abandon(detail, "incomplete", now, _FAIL)

    def _on_cancel(self, request: FcopyCancel, now: float) -> FcopyStep:
        if self.state is not FcopyState.RECEIVING:
            return Step(fcopy_reply(_OK))
        return self._abandon("cancelled by the host", "cancelled", now, _OK)

    def _on_malformed(self, message: Malformed, now: float) -> FcopyStep:
        if self.state is not FcopyState.RECEIVING:
            return Step(fcopy_reply(_FAIL))
        return self._abandon(f"malformed message: {message.error}", "failed", now, _FAIL)

    def _refuse(self, request: FcopyRequest) -> FcopyStep:
        why = "after the transfer failed" if self.state is FcopyState.FAILED else (
            "without a transfer in progress")
        log = Log(WARNING, "fcopy %s %s: refused", (_OPS[type(request)], why))
        return Step(fcopy_reply(_FAIL), (log,))

    # -- outcomes ----------------------------------------------------------------

    def _settle(self, outcome: Outcome, now: float) -> FcopyStep:
        transfer = self.transfer
        if isinstance(outcome, ChannelLost):
            if transfer is None or transfer.finished is not None:
                return Step()
            self._end(transfer, "aborted", now, outcome.reason)
            return Step(None, (DiscardTarget(outcome.reason),))
        assert transfer is not None
        if isinstance(outcome, FragmentFailed):
            transfer.bytes_done = outcome.offset
            self._end(transfer, _result_name(outcome.status), now, outcome.detail)
            return Step(fcopy_reply(outcome.status))
        ok = outcome.status == _OK
        if self.state is FcopyState.WRITING and ok:
            transfer.bytes_done = self._write_end
        elif self.state is FcopyState.COMMITTING or not ok:
            # A failed write's file is already discarded by the writer itself.
            self._end(transfer, _result_name(outcome.status), now, outcome.detail)
        return Step(fcopy_reply(outcome.status))

    # -- helpers -----------------------------------------------------------

    def _abandon(self, detail: str, result: str, now: float, status: int) -> FcopyStep:
        assert self.transfer is not None
        log = Log(WARNING, "fcopy %s: %s", (self.transfer.target, detail))
        self._end(self.transfer, result, now, detail)
        return Step(fcopy_reply(status), (log, DiscardTarget(detail)))

    def _end(self, transfer: Transfer, result: str, now: float, detail: str) -> None:
        if transfer.finished is not None:
            return
        transfer.result = result
        transfer.finished = now
        transfer.detail = detail
        self.finished.append(transfer)


def _note_irregular(transfer: Transfer, offset: int, end: int) -> tuple[Action, ...]:
    """Count a WRITE that does not continue where the data ends; log the first gap
    and the first overlap of the transfer, with the offsets."""
    high = transfer.bytes_done
    if offset > high:
        transfer.gaps += 1
        first = transfer.gaps == 1
        what = f"leaves a gap after {high} (bytes {high}-{offset - 1} read as zeros if never sent)"
    else:
        transfer.overlaps += 1
        first = transfer.overlaps == 1
        what = f"overlaps the data received up to {high} (a resend?)"
    if not first:
        return ()
    return (
        Log(WARNING, "fcopy %s: WRITE of bytes %d-%d %s; accepted, logged once per transfer",
            (transfer.target, offset, end - 1, what)),
    )


def _result_name(status: int) -> str:
    return "ok" if status == _OK else status_name(status)
