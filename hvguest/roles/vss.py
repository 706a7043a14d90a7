"""VSS (live backup): the protocol state machine (no I/O, time passed in).

Raw 12-byte requests go in; out come actions: ``Reply`` (bytes for the kernel),
``CheckCapability``, ``Freeze`` and ``Thaw`` for the daemon, whose results come back
through ``capability_result()``, ``freeze_result()`` and ``thaw_result()``.

Decisions (the C daemon differs, protocol.md §3):

* Every reply is 12 bytes, status over bytes 0-3, bytes 4-11 echoed.
* A message that does not decode (short, long, operation >= 8) gets HV_INVALIDARG;
  FREEZE while frozen, THAW while not frozen and anything during a freeze or thaw
  get HV_E_FAIL. The state is unchanged and the daemon keeps serving.
* THAW after the auto-thaw timer already thawed fails: the snapshot may have been
  taken after the filesystems were writable again.
* HOT_BACKUP is a capability check. Its reply carries VSS_HBU_NO_AUTO_RECOVERY in
  bytes 8-11; the kernel forwards that flag only when byte 0 of the reply is 2,
  which status 0 never is, so ``hbu_flag_in_status`` answers status 2 (a success
  code) instead, for hosts that need the flag.
* The operations the kernel answers itself (CREATE, DELETE, GET_DM_INFO,
  BU_COMPLETE, AUTO_RECOVER) get the kernel's answer if they ever arrive: status 0,
  and for GET_DM_INFO flags 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from hvguest.errors import WireError
from hvguest.wire.status import HvStatus
from hvguest.wire.vss import VSS_HBU_NO_AUTO_RECOVERY, VssMessage, VssOp, vss_reply

log = logging.getLogger(__name__)

HBU_STATUS_WITH_FLAG = 0x00000002


class VssState(Enum):
    IDLE = "idle"
    CHECKING = "checking"
    FREEZING = "freezing"
    FROZEN = "frozen"
    THAWING = "thawing"


@dataclass(frozen=True)
class Reply:
    data: bytes
    status: int
    op: str
    detail: str = ""


@dataclass(frozen=True)
class CheckCapability:
    """Can a live backup work? (mount table readable, something to freeze)."""


@dataclass(frozen=True)
class Freeze:
    """Run the freeze hooks, then freeze; report with ``freeze_result()``."""


@dataclass(frozen=True)
class Thaw:
    """Thaw what was frozen, then run the thaw hooks; report with ``thaw_result()``.

    ``why`` is "host" (THAW), "auto" (auto-thaw bound) or "stop" (daemon stopping).
    """

    why: str


@dataclass(frozen=True)
class ArmAutoThaw:
    at: float


@dataclass(frozen=True)
class CancelAutoThaw:
    pass


Action = Reply | CheckCapability | Freeze | Thaw | ArmAutoThaw | CancelAutoThaw

_KERNEL_ANSWERED = {
    VssOp.CREATE,
    VssOp.DELETE,
    VssOp.GET_DM_INFO,
    VssOp.BU_COMPLETE,
    VssOp.AUTO_RECOVER,
}


class VssRole:
    def __init__(self, *, auto_thaw: float, hbu_flag_in_status: bool = False) -> None:
        self.auto_thaw = auto_thaw
        self.hbu_flag_in_status = hbu_flag_in_status
        self.state = VssState.IDLE
        self.frozen_at: float | None = None
        self.deadline: float | None = None
        self.auto_thawed_at: float | None = None
        self._request = b""
        self._thaw_why = ""

    # -- host messages -----------------------------------------------------------

    def on_message(self, raw: bytes, now: float) -> list[Action]:
        try:
            msg = VssMessage.decode(raw)
        except WireError as exc:
            return [
                self._fail(
                    raw, "invalid", f"malformed request ({exc}); ignored", HvStatus.HV_INVALIDARG
                )
            ]
        op = VssOp(msg.operation)
        if self.state in (VssState.CHECKING, VssState.FREEZING, VssState.THAWING):
            return [self._fail(raw, op.name, f"{op.name} while {self.state.value}; ignored")]
        if op in _KERNEL_ANSWERED:
            flags = 0 if op is VssOp.GET_DM_INFO else None
            return [
                Reply(
                    vss_reply(raw, HvStatus.HV_S_OK, flags),
                    HvStatus.HV_S_OK,
                    op.name,
                    "answered as the kernel does",
                )
            ]
        if op is VssOp.HOT_BACKUP:
            if self.state is VssState.FROZEN:
                return [self._hot_backup_reply(raw)]
            self._request = raw
            self.state = VssState.CHECKING
            return [CheckCapability()]
        if op is VssOp.FREEZE:
            if self.state is VssState.FROZEN:
                since = now - (self.frozen_at or now)
                return [
                    self._fail(
                        raw,
                        "FREEZE",
                        f"FREEZE while already frozen (for {since:.1f} s);"
                        " the filesystems stay frozen until THAW or auto-thaw",
                    )
                ]
            self._request = raw
            self.auto_thawed_at = None
            self.state = VssState.FREEZING
            return [Freeze()]
        # THAW
        if self.state is VssState.FROZEN:
            self._request = raw
            self._thaw_why = "host"
            self.state = VssState.THAWING
            return [CancelAutoThaw(), Thaw("host")]
        if self.auto_thawed_at is not None:
            late = now - self.auto_thawed_at
            self.auto_thawed_at = None
            return [
                self._fail(
                    raw,
                    "THAW",
                    f"THAW {late:.1f} s after the auto-thaw bound of"
                    f" {self.auto_thaw:g} s had thawed the filesystems; the snapshot"
                    " may not be consistent (raise vss.auto_thaw)",
                )
            ]
        return [self._fail(raw, "THAW", "THAW without a FREEZE: nothing is frozen")]

    # -- results from the daemon ----------------------------------------------------

    def capability_result(self, ok: bool, detail: str) -> list[Action]:
        self._expect(VssState.CHECKING)
        self.state = VssState.IDLE
        if not ok:
            return [self._fail(self._request, "HOT_BACKUP", detail)]
        return [self._hot_backup_reply(self._request, detail)]

    def freeze_result(self, ok: bool, detail: str, now: float) -> list[Action]:
        self._expect(VssState.FREEZING)
        if not ok:
            self.state = VssState.IDLE
            return [self._fail(self._request, "FREEZE", detail)]
        self.state = VssState.FROZEN
        self.frozen_at = now
        self.deadline = now + self.auto_thaw
        return [
            ArmAutoThaw(self.deadline),
            Reply(vss_reply(self._request, HvStatus.HV_S_OK), HvStatus.HV_S_OK, "FREEZE", detail),
        ]

    def thaw_result(self, ok: bool, detail: str, now: float) -> list[Action]:
        self._expect(VssState.THAWING)
        why = self._thaw_why
        self.state = VssState.IDLE
        self.frozen_at = self.deadline = None
        if why == "auto":
            self.auto_thawed_at = now
        if why != "host":
            return []  # no request outstanding
        if not ok:
            return [self._fail(self._request, "THAW", detail)]
        return [Reply(vss_reply(self._request, HvStatus.HV_S_OK), HvStatus.HV_S_OK, "THAW", detail)]

    # -- time and stop ------------------------------------------------------------------

    def on_timer(self, now: float) -> list[Action]:
        if self.state is not VssState.FROZEN or self.deadline is None or now < self.deadline:
            return []
        self._thaw_why = "auto"
        self.state = VssState.THAWING
        return [Thaw("auto")]

    def on_stop(self) -> list[Action]:
        if self.state is not VssState.FROZEN:
            return []
        self._thaw_why = "stop"
        self.state = VssState.THAWING
        return [CancelAutoThaw(), Thaw("stop")]

    # -- helpers ----------------------------------------------------------------------

    def _hot_backup_reply(self, raw: bytes, detail: str = "") -> Reply:
        status = HBU_STATUS_WITH_FLAG if self.hbu_flag_in_status else HvStatus.HV_S_OK
        return Reply(vss_reply(raw, status, VSS_HBU_NO_AUTO_RECOVERY), status, "HOT_BACKUP", detail)

    def _fail(
        self, raw: bytes, op: str, detail: str, status: HvStatus = HvStatus.HV_E_FAIL
    ) -> Reply:
        return Reply(vss_reply(raw, status), status, op, detail)

    def _expect(self, state: VssState) -> None:
        if self.state is not state:
            raise RuntimeError(f"VSS result while {self.state.value}, expected {state.value}")
