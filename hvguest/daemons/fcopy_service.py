"""The transfer service behind hvguest-fcopyd, shared by both transports.

``FcopyService`` runs the protocol role (hvguest.roles.fcopy) against the file
writer and the path policy, keeps the per-transfer records for ``hvguestctl fcopy``
and answers each message with a status (``fcopy_ring.ic_reply`` wraps it for the
raw VMBus ring of kernels >= 6.10).
The per-fragment WRITE path avoids decoding whole messages: it is the hot path of
a Copy-VMFile transfer.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from hvguest.errors import WireError
from hvguest.fcopy.policy import PathPolicy, TransferRefused
from hvguest.fcopy.remedy import remedy
from hvguest.fcopy.settings import FcopySettings
from hvguest.fcopy.writer import Committed, FileWriter, stale_directories, sweep_stale
from hvguest.roles.fcopy import (
    Action,
    ChannelLost,
    CommitTarget,
    DiscardTarget,
    Done,
    FcopyRole,
    FcopyState,
    FcopyStep,
    FragmentFailed,
    Malformed,
    OpenTarget,
    Transfer,
    WriteData,
)
from hvguest.roles.step import Log
from hvguest.state import StatePublisher, utc_now
from hvguest.wire.fcopy import (
    DATA_FRAGMENT,
    WRITE_DATA_OFFSET,
    WRITE_HEAD,
    FcopyComplete,
    FcopyOp,
    FcopyWrite,
    decode_fcopy_reply,
    decode_fcopy_request,
)
from hvguest.wire.status import HvStatus, status_name

log = logging.getLogger(__name__)

# Plain ints for the per-fragment path (enum attribute lookups cost more).
_OP_WRITE = int(FcopyOp.WRITE_TO_FILE)
_S_OK = int(HvStatus.HV_S_OK)


# -- the service shared by both transports -------------------------------------------


class FcopyService:
    """Role + writer + published state for one channel."""

    def __init__(
        self,
        settings: FcopySettings,
        publisher: StatePublisher | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.policy = PathPolicy(
            settings.allowed_roots,
            dir_mode=settings.dir_mode_bits,
            uid=settings.uid,
            gid=settings.gid,
        )
        self.writer = FileWriter(
            self.policy,
            file_mode=settings.file_mode_bits,
            uid=settings.uid,
            gid=settings.gid,
            checksum=settings.checksum,
        )
        self.role = FcopyRole(settings.max_file_size)
        self.publisher = publisher
        self.clock = clock
        self.recent: deque[dict[str, Any]] = deque(maxlen=settings.history)
        self._committed: Committed | None = None
        self._pending_write: tuple[int, memoryview] | None = None
        self._late_failure: int | None = None
        self._progress_dirty = False
        self.counts = {"ok": 0, "failed": 0, "bytes": 0}

    # -- one message -----------------------------------------------------------

    def handle(self, body: bytes, *, utf16: bool) -> int:
        """One fcopy message (starting at the fcopy header) -> reply status.

        A WRITE fragment the role accepts is answered HV_S_OK here and written
        (and hashed) by ``after_reply()``, or by the next request at the latest. A
        write that fails there is reported on the next request of the transfer
        (WRITE or COMPLETE get its status, e.g. HV_ERROR_DISK_FULL); COMPLETE is
        answered only after every byte is written and synced, so the host never
        sees success for data that did not land. The device loops instead write
        an accepted fragment before its reply (``accept()`` + ``write_now()``).
        """
        if self.accept(body, len(body)):
            return _S_OK
        state = self.role.state
        now = self.clock()
        late_kind = False
        transfer_before = self.role.transfer
        try:
            request = decode_fcopy_request(body, utf16=utf16)
        except WireError as exc:
            log.warning("fcopy: malformed message (%d bytes): %s", len(body), exc)
            step = self.role.handle(Malformed(exc), now)
        else:
            late_kind = isinstance(request, FcopyWrite | FcopyComplete)
            step = self.role.handle(request, now)
        status = self._run(step, now)
        if self._late_failure is not None:
            if late_kind and state is FcopyState.FAILED and status == HvStatus.HV_E_FAIL:
                status = self._late_failure
            if self.role.state is not FcopyState.FAILED:
                self._late_failure = None
        if self.role.finished:
            self._record_finished()
        elif self.role.state is FcopyState.RECEIVING:
            # A new transfer is published at once: its temporary file's name must
            # be on disk before a crash could leave that file behind.
            self._progress_dirty = True
            if self.role.transfer is not transfer_before:
                self._publish_progress(force=True)
        return status

    def accept(self, message: bytes | memoryview, length: int) -> bool:
        """The common request without building a request object: a WRITE that
        continues the open transfer within its limits. True: its status is HV_S_OK
        or, after ``write_now()``, the write's; the fragment stays in ``message``
        until it is written (``write_now()``, ``after_reply()`` or the next request
        at the latest). False: pass the message to ``handle()``."""
        if self._pending_write is not None:
            self._flush_pending()
        if length < WRITE_DATA_OFFSET or self.role.state is not FcopyState.RECEIVING:
            return False
        op, offset, size = WRITE_HEAD.unpack_from(message)
        if (
            op != _OP_WRITE
            or size > DATA_FRAGMENT
            or WRITE_DATA_OFFSET + size > length
            or not self.role.accept_write(offset, size)
        ):
            return False
        data = memoryview(message)[WRITE_DATA_OFFSET : WRITE_DATA_OFFSET + size]
        self._pending_write = (offset, data)
        self._progress_dirty = True
        return True

    def write_fragment(
        self, message: bytes | memoryview, length: int, *, defer_hash: bool = True
    ) -> int | None:
        """``accept()`` and ``write_now()`` in one call, for the device loops: the
        status to send for a WRITE that continues the transfer, None when the
        message needs ``handle()``."""
        if not self.accept(message, length):
            return None
        return self.write_now(defer_hash=defer_hash)

    def write_now(self, *, defer_hash: bool = True) -> int:
        """Write the fragment ``accept()`` took, before its reply: the status to
        send. The daemon loops do this rather than write behind the reply: the host
        waits for the reply either way, and a write after it would only sit in
        front of our next read, delaying the next fragment just as much, while
        here a failure reaches the host on the very request that caused it (and,
        as for a write behind, on every later WRITE/COMPLETE of the transfer).
        With ``defer_hash`` its checksum waits for ``after_reply()``: nothing of the
        reply depends on it."""
        pending = self._pending_write
        if pending is None:
            return _S_OK
        self._pending_write = None
        try:
            self.writer.write(*pending, defer_hash=defer_hash)
        except TransferRefused as exc:
            self._write_failed(pending[0], exc)
            return exc.status
        return _S_OK

    def after_reply(self) -> None:
        """The reply is on its way: write the fragment it acknowledged, and hash
        what ``write_now()`` wrote."""
        if self._pending_write is not None:
            self._flush_pending()
        self.writer.hash_deferred()

    def _flush_pending(self) -> None:
        assert self._pending_write is not None
        offset, data = self._pending_write
        self._pending_write = None
        try:
            self.writer.write(offset, data)
        except TransferRefused as exc:
            self._write_failed(offset, exc)

    def _write_failed(self, offset: int, exc: TransferRefused) -> None:
        self._late_failure = exc.status
        failed = FragmentFailed(offset, exc.status, str(exc))
        self._run(self.role.complete(failed, self.clock()), self.clock())
        self._record_finished()

    def _run(self, step: FcopyStep, now: float) -> int:
        """Carry out ``step``'s actions (the first failing one stops the rest) and
        return the status to send: the step's reply, or the one ``complete()``
        answers for the actions' outcome."""
        status: int = HvStatus.HV_S_OK
        detail = ""
        for action in step.actions:
            try:
                self._act(action)
            except TransferRefused as exc:
                status, detail = exc.status, str(exc)
                log.debug("fcopy: %s (%s)", exc, status_name(status))
                break
            except OSError as exc:  # not foreseen by the writer: still answer
                status, detail = HvStatus.HV_E_FAIL, f"unexpected error: {exc}"
                log.error("fcopy: %s", detail)
                self.writer.discard(detail)
                break
        if step.reply is None:
            step = self.role.complete(Done(status, detail), self.clock())
            for action in step.actions:
                self._act(action)
        assert step.reply is not None
        return decode_fcopy_reply(step.reply)

    def _act(self, action: Action) -> None:
        if isinstance(action, Log):
            log.log(action.level, action.message, *action.args,
                    extra={f"HVGUEST_{k.upper()}": v for k, v in action.fields.items()})
        elif isinstance(action, WriteData):
            self.writer.write(action.offset, action.data)
        elif isinstance(action, OpenTarget):
            self.writer.open(
                action.path_name,
                action.file_name,
                overwrite=action.overwrite,
                create_path=action.create_path,
            )
            self._committed = None
        elif isinstance(action, CommitTarget):
            self._committed = self.writer.commit()
        elif isinstance(action, DiscardTarget):
            self.writer.discard(action.reason)

    def sweep_stale(self, previous_temp: object = None) -> list[str]:
        """At start: remove what an instance that died mid-transfer left behind."""
        return sweep_stale(self.policy, stale_directories(self.policy, previous_temp))

    def abort(self, reason: str) -> None:
        """The channel is gone (stop, device reopened): drop any open transfer."""
        self._pending_write = None
        self._late_failure = None
        for action in self.role.complete(ChannelLost(reason), self.clock()).actions:
            self._act(action)
        self.writer.discard(reason)
        if self.role.finished:
            self._record_finished()

    # -- records ---------------------------------------------------------------

    def _record_finished(self) -> None:
        for transfer in self.role.finished:
            self._record(transfer)
        self.role.finished.clear()
        self._publish_progress(force=True)

    def _record(self, transfer: Transfer) -> None:
        ok = transfer.result == "ok"
        committed = self._committed if ok else None
        record = {
            "name": transfer.target,
            "size": transfer.bytes_done,
            "file_size": transfer.file_size,
            "gaps": transfer.gaps,
            "overlaps": transfer.overlaps,
            "sha256": committed.sha256 if committed else None,
            "result": transfer.result,
            "detail": transfer.detail,
            "duration": round(transfer.duration(self.clock()), 3),
            "finished": utc_now(),
        }
        self.counts["ok" if ok else "failed"] += 1
        self.counts["bytes"] += transfer.bytes_done
        self.recent.append(record)
        fields = {
            "HVGUEST_FCOPY_TARGET": transfer.target,
            "HVGUEST_FCOPY_SIZE": transfer.bytes_done,
            "HVGUEST_FCOPY_RESULT": transfer.result,
        }
        if ok:
            if record["sha256"]:
                fields["HVGUEST_FCOPY_SHA256"] = record["sha256"]
            log.info(
                "received %s: %d bytes, sha256 %s, %.2f s",
                transfer.target,
                transfer.bytes_done,
                record["sha256"] or "not computed",
                record["duration"],
                extra=fields,
            )
        else:
            log.warning(
                "transfer of %s %s after %d bytes: %s",
                transfer.target,
                transfer.result,
                transfer.bytes_done,
                transfer.detail or "-",
                extra=fields,
            )
        if self.publisher is not None:
            self.publisher.record_op(
                "copy", transfer.result, f"{transfer.target}: {transfer.detail}"
            )
            if ok:
                self.publisher.clear_error()
            elif transfer.result not in ("cancelled", "superseded"):
                self.publisher.record_error(
                    f"{transfer.target}: {transfer.result}: {transfer.detail}",
                    remedy(transfer.result, transfer.detail),
                )

    def progress(self) -> dict[str, Any] | None:
        transfer = self.role.transfer
        if self.role.state is not FcopyState.RECEIVING or transfer is None:
            return None
        return {
            "name": transfer.target,
            "bytes_done": transfer.bytes_done,
            "file_size": transfer.file_size,
            "seconds": round(transfer.duration(self.clock()), 1),
            "temp": self.writer.temp_path,
        }

    def _publish_progress(self, force: bool = False) -> None:
        if self.publisher is None or not (force or self._progress_dirty):
            return
        self._progress_dirty = False
        self.publisher.update(
            state="receiving" if self.role.state is FcopyState.RECEIVING else "ready",
            details={
                "in_progress": self.progress(),
                "recent_transfers": list(self.recent),
                "transfers_ok": self.counts["ok"],
                "transfers_failed": self.counts["failed"],
                "bytes_received": self.counts["bytes"],
            },
        )
        self.publisher.publish()

    def tick(self) -> None:
        """Periodic: publish the bytes done of a running transfer."""
        self._publish_progress()
