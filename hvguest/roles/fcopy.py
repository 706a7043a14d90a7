"""File copy from the host: the protocol state machine (no I/O).

A decoded request goes in; out comes a ``Step``: either an immediate reply status
(the request is refused or needs no file work) or a list of file actions for the
writer. The daemon runs the actions and hands the writer's status back through
``finish()``, which settles the state and returns the status to send.

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

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from hvguest.errors import WireError
from hvguest.fcopy.names import escape
from hvguest.wire.fcopy import (
    CREATE_PATH,
    OVER_WRITE,
    FcopyCancel,
    FcopyComplete,
    FcopyRequest,
    FcopyStart,
    FcopyWrite,
)
from hvguest.wire.status import HvStatus

log = logging.getLogger(__name__)

KNOWN_FLAGS = OVER_WRITE | CREATE_PATH


class FcopyState(Enum):
    IDLE = "idle"
    RECEIVING = "receiving"
    FAILED = "failed"


# -- actions for the writer ----------------------------------------------------


@dataclass(frozen=True)
class OpenTarget:
    """Check the target against the policy and open a temporary file for it."""

    path_name: str
    file_name: str
    overwrite: bool
    create_path: bool
    file_size: int


@dataclass(frozen=True)
class WriteData:
    offset: int
    data: bytes


@dataclass(frozen=True)
class CommitTarget:
    """fsync and move the temporary file to its final name."""


@dataclass(frozen=True)
class DiscardTarget:
    """Drop the temporary file; nothing appears at the final name."""

    reason: str


Action = OpenTarget | WriteData | CommitTarget | DiscardTarget


@dataclass(frozen=True)
class Step:
    """What to do for one request.

    ``actions`` run in order; the first failing one stops the rest. When ``reply`` is
    set it is the status to send (refusals, CANCEL); otherwise the status comes from
    ``FcopyRole.finish()``.
    """

    actions: tuple[Action, ...] = ()
    reply: HvStatus | None = None


@dataclass
class Transfer:
    """The copy in progress (or the last one, once finished)."""

    path_name: str
    file_name: str
    file_size: int
    flags: int
    started: float
    bytes_done: int = 0  # the highest end written so far
    gaps: int = 0  # WRITEs that started beyond bytes_done
    overlaps: int = 0  # WRITEs that started before it (resends)
    result: str = "in progress"
    finished: float | None = None
    detail: str = ""

    @property
    def target(self) -> str:
        """The target for logs and records, control characters escaped."""
        return escape(self.path_name.rstrip("/") + "/" + self.file_name)

    def duration(self, now: float) -> float:
        return (self.finished if self.finished is not None else now) - self.started


@dataclass
class _Pending:
    """The request whose actions the daemon is running."""

    kind: str
    write_end: int = 0


@dataclass
class FcopyRole:
    """Sequencing and bounds of one fcopy channel."""

    max_file_size: int
    state: FcopyState = FcopyState.IDLE
    transfer: Transfer | None = None
    # Transfers that ended since the daemon last looked (it records and clears them).
    finished: list[Transfer] = field(default_factory=list)
    _pending: _Pending | None = None

    # -- requests ----------------------------------------------------------

    def handle(self, request: FcopyRequest, now: float) -> Step:
        if self._pending is not None:
            raise RuntimeError(f"fcopy {self._pending.kind}: finish() was not called")
        handler = _TRANSITIONS[(self.state, type(request))]
        return handler(self, request, now)

    def accept_write(self, offset: int, size: int) -> bool:
        """Fast path for the common request: a WRITE that continues the open
        transfer where its data ends, within its limits. True: write the data now
        (report a failure with ``write_failed``); False: pass the request to
        ``handle()`` (a resend, a gap, or a refusal). Saves building a Step."""
        transfer = self.transfer
        if (
            self.state is not FcopyState.RECEIVING
            or self._pending is not None
            or transfer is None
            or offset != transfer.bytes_done
        ):
            return False
        end = offset + size
        if end > transfer.file_size or end > self.max_file_size:
            return False
        transfer.bytes_done = end
        return True

    def write_failed(self, offset: int, status: int, now: float, detail: str) -> int:
        """The data of an accepted fast-path WRITE could not be written."""
        transfer = self.transfer
        assert transfer is not None
        transfer.bytes_done = offset
        self._end(transfer, _result_name(status), now, detail)
        self.state = FcopyState.FAILED
        return status

    def bad_request(self, error: WireError, now: float) -> Step:
        """A request that does not decode: HV_E_FAIL; an open transfer is abandoned,
        since a fragment of it may be the one that was lost."""
        if self.state is FcopyState.RECEIVING:
            return self._abandon(f"malformed message: {error}", "failed", now, HvStatus.HV_E_FAIL)
        return Step(reply=HvStatus.HV_E_FAIL)

    def finish(self, status: int, now: float, detail: str = "") -> int:
        """The writer's result for the last Step without ``reply``; returns the status
        to send to the host."""
        pending = self._pending
        if pending is None:
            raise RuntimeError("fcopy finish() without a pending request")
        self._pending = None
        transfer = self.transfer
        assert transfer is not None
        ok = status == HvStatus.HV_S_OK
        if pending.kind == "start":
            if ok:
                self.state = FcopyState.RECEIVING
            else:
                self._end(transfer, _result_name(status), now, detail)
                self.state = FcopyState.IDLE
        elif pending.kind == "write":
            if ok:
                transfer.bytes_done = pending.write_end
            else:
                # The writer discards its file itself when a write fails.
                self._end(transfer, _result_name(status), now, detail)
                self.state = FcopyState.FAILED
        elif pending.kind == "complete":
            self._end(transfer, "ok" if ok else _result_name(status), now, detail)
            self.state = FcopyState.IDLE
        return status

    def abort(self, reason: str, now: float) -> tuple[Action, ...]:
        """The channel was lost (daemon stop, device reopened): actions that leave
        nothing behind."""
        self._pending = None
        if self.state is FcopyState.RECEIVING:
            assert self.transfer is not None
            self._end(self.transfer, "aborted", now, reason)
            self.state = FcopyState.IDLE
            return (DiscardTarget(reason),)
        self.state = FcopyState.IDLE
        return ()

    # -- transitions -------------------------------------------------------

    def _start(self, request: FcopyRequest, now: float) -> Step:
        assert isinstance(request, FcopyStart)
        before: tuple[Action, ...] = ()
        if self.state is FcopyState.RECEIVING:
            assert self.transfer is not None
            log.warning(
                "START of %s while %s is open: abandoning the open transfer",
                escape(request.file_name),
                self.transfer.target,
            )
            self._end(self.transfer, "superseded", now, "a new START arrived")
            before = (DiscardTarget("superseded by a new START"),)
        self.state = FcopyState.IDLE
        transfer = Transfer(
            request.path_name, request.file_name, request.file_size, request.copy_flags, now
        )
        self.transfer = transfer
        if request.copy_flags & ~KNOWN_FLAGS:
            log.info("fcopy START: ignoring unknown copy_flags bits %#x", request.copy_flags)
        if request.file_size > self.max_file_size:
            detail = f"file_size {request.file_size} exceeds the limit {self.max_file_size}"
            self._end(transfer, "refused", now, detail)
            return Step(before, HvStatus.HV_E_FAIL)
        self._pending = _Pending("start")
        return Step(
            before
            + (
                OpenTarget(
                    request.path_name,
                    request.file_name,
                    bool(request.copy_flags & OVER_WRITE),
                    bool(request.copy_flags & CREATE_PATH),
                    request.file_size,
                ),
            )
        )

    def _write(self, request: FcopyRequest, now: float) -> Step:
        assert isinstance(request, FcopyWrite) and self.transfer is not None
        transfer = self.transfer
        end = request.offset + len(request.data)
        limit = min(transfer.file_size, self.max_file_size)
        if end > limit:
            detail = (
                f"WRITE of {len(request.data)} bytes at offset {request.offset} ends at {end}, "
                f"beyond the announced file_size {transfer.file_size}"
                if end > transfer.file_size
                else f"WRITE ends at {end}, beyond the limit {self.max_file_size}"
            )
            return self._abandon(detail, "refused", now, HvStatus.HV_E_FAIL)
        if request.data and request.offset != transfer.bytes_done:
            _note_irregular(transfer, request.offset, end)
        self._pending = _Pending("write", max(end, transfer.bytes_done))
        return Step((WriteData(request.offset, request.data),))

    def _complete(self, request: FcopyRequest, now: float) -> Step:
        transfer = self.transfer
        assert transfer is not None
        if transfer.bytes_done != transfer.file_size:
            done, size = transfer.bytes_done, transfer.file_size
            detail = f"COMPLETE when the data ends at {done} of {size} announced bytes"
            return self._abandon(detail, "incomplete", now, HvStatus.HV_E_FAIL, FcopyState.IDLE)
        self._pending = _Pending("complete")
        return Step((CommitTarget(),))

    def _cancel(self, request: FcopyRequest, now: float) -> Step:
        assert self.transfer is not None
        return self._abandon(
            "cancelled by the host", "cancelled", now, HvStatus.HV_S_OK, FcopyState.IDLE
        )

    def _cancel_idle(self, request: FcopyRequest, now: float) -> Step:
        self.state = FcopyState.IDLE
        return Step(reply=HvStatus.HV_S_OK)

    def _refuse_idle(self, request: FcopyRequest, now: float) -> Step:
        log.warning("fcopy %s without a transfer in progress: refused", _op_name(request))
        return Step(reply=HvStatus.HV_E_FAIL)

    def _refuse_failed(self, request: FcopyRequest, now: float) -> Step:
        log.warning("fcopy %s after the transfer failed: refused", _op_name(request))
        if isinstance(request, FcopyComplete):
            self.state = FcopyState.IDLE
        return Step(reply=HvStatus.HV_E_FAIL)

    # -- helpers -----------------------------------------------------------

    def _abandon(
        self,
        detail: str,
        result: str,
        now: float,
        reply: HvStatus,
        next_state: FcopyState = FcopyState.FAILED,
    ) -> Step:
        assert self.transfer is not None
        log.warning("fcopy %s: %s", self.transfer.target, detail)
        self._end(self.transfer, result, now, detail)
        self.state = next_state
        return Step((DiscardTarget(detail),), reply)

    def _end(self, transfer: Transfer, result: str, now: float, detail: str) -> None:
        if transfer.finished is not None:
            return
        transfer.result = result
        transfer.finished = now
        transfer.detail = detail
        self.finished.append(transfer)


def _note_irregular(transfer: Transfer, offset: int, end: int) -> None:
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
    if first:
        log.warning("fcopy %s: WRITE of bytes %d-%d %s; accepted, logged once per transfer",
                    transfer.target, offset, end - 1, what)


def _result_name(status: int) -> str:
    if status == HvStatus.HV_S_OK:
        return "ok"
    try:
        return HvStatus(status).name
    except ValueError:
        return f"0x{status & 0xFFFFFFFF:08x}"


def _op_name(request: FcopyRequest) -> str:
    return {
        FcopyStart: "START_FILE_COPY",
        FcopyWrite: "WRITE_TO_FILE",
        FcopyComplete: "COMPLETE_FCOPY",
        FcopyCancel: "CANCEL_FCOPY",
    }[type(request)]


_Handler = Callable[[FcopyRole, FcopyRequest, float], Step]

_TRANSITIONS: dict[tuple[FcopyState, type], _Handler] = {
    (FcopyState.IDLE, FcopyStart): FcopyRole._start,
    (FcopyState.IDLE, FcopyWrite): FcopyRole._refuse_idle,
    (FcopyState.IDLE, FcopyComplete): FcopyRole._refuse_idle,
    (FcopyState.IDLE, FcopyCancel): FcopyRole._cancel_idle,
    (FcopyState.RECEIVING, FcopyStart): FcopyRole._start,
    (FcopyState.RECEIVING, FcopyWrite): FcopyRole._write,
    (FcopyState.RECEIVING, FcopyComplete): FcopyRole._complete,
    (FcopyState.RECEIVING, FcopyCancel): FcopyRole._cancel,
    (FcopyState.FAILED, FcopyStart): FcopyRole._start,
    (FcopyState.FAILED, FcopyWrite): FcopyRole._refuse_failed,
    (FcopyState.FAILED, FcopyComplete): FcopyRole._refuse_failed,
    (FcopyState.FAILED, FcopyCancel): FcopyRole._cancel_idle,
}
