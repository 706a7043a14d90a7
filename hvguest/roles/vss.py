"""VSS (live backup): the protocol state machine (no I/O, time passed in).

``handle(message, now)`` takes a raw 12-byte request; ``complete(outcome, now)``
takes what the daemon did on the role's behalf (``CapabilityChecked``,
``FreezeDone``, ``ThawDone``) and the two events that do not come from the host:
``AutoThawDue`` (the auto-thaw timer fired) and ``Stopping`` (the daemon stops or
lost the device: nothing may stay frozen). Both answer a ``Step``: the reply bytes,
if one is due now, and the actions (``CheckCapability``, ``Freeze``, ``Thaw``,
``ArmAutoThaw``, ``CancelAutoThaw``, ``Answered`` for the state file, ``Log``),
carried out in order before the reply is sent.

Host messages are accepted in every state (a bad or untimely one gets a failure
reply, the daemon keeps serving); an outcome or event the state does not expect is
the daemon's bug and raises ``LocalUsageError`` naming state and event.

Decisions (the C daemon differs, protocol.md §3):

* Every reply is 12 bytes, status over bytes 0-3, bytes 4-11 echoed.
* A message that does not decode (short, long, operation >= 8) gets HV_INVALIDARG;
  FREEZE while frozen, THAW while not frozen and anything during a freeze or thaw
  get HV_E_FAIL. The state is unchanged.
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

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from hvguest.errors import WireError
from hvguest.roles.step import Log, Step, Transitions
from hvguest.wire.status import HvStatus, status_name
from hvguest.wire.vss import VSS_HBU_NO_AUTO_RECOVERY, VssMessage, VssOp, vss_reply

# logging's levels, without importing logging into a role.
INFO, WARNING = 20, 30
HBU_STATUS_WITH_FLAG = 0x00000002

ThawWhy = Literal["host", "auto", "stop"]


class VssState(Enum):
    IDLE = "idle"
    CHECKING = "checking"
    FREEZING = "freezing"
    FROZEN = "frozen"
    THAWING = "thawing"


# -- actions (the daemon carries them out) -------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckCapability:
    """Can a live backup work? Answer with ``CapabilityChecked``."""


@dataclass(frozen=True, slots=True)
class Freeze:
    """Run the freeze hooks, then freeze; answer with ``FreezeDone``."""


@dataclass(frozen=True, slots=True)
class Thaw:
    """Thaw what was frozen (then run the thaw hooks); answer with ``ThawDone``.
    ``why``: "host" (THAW), "auto" (auto-thaw bound) or "stop" (stop, device lost)."""

    why: ThawWhy


@dataclass(frozen=True, slots=True)
class ArmAutoThaw:
    """Call ``complete(AutoThawDue())`` at ``at`` (the role's clock)."""

    at: float


@dataclass(frozen=True, slots=True)
class CancelAutoThaw:
    """The host thawed in time: the timer is not needed."""


@dataclass(frozen=True, slots=True)
class Answered:
    """A request was answered: ``op -> status`` for the state file's last_op."""

    op: str
    status: str
    detail: str = ""


Action = CheckCapability | Freeze | Thaw | ArmAutoThaw | CancelAutoThaw | Answered | Log


# -- outcomes and events (the daemon reports them) ------------------------------------


@dataclass(frozen=True, slots=True)
class _Done:
    """Whether the work succeeded; ``detail`` goes into the reply's log line."""

    ok: bool
    detail: str


class CapabilityChecked(_Done):
    __slots__ = ()


class FreezeDone(_Done):
    """``ok``: frozen (or nothing to freeze); else everything is thawed again."""

    __slots__ = ()


class ThawDone(_Done):
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class AutoThawDue:
    """The auto-thaw timer fired."""


@dataclass(frozen=True, slots=True)
class Stopping:
    """The daemon stops, or the device failed (the host will not get a reply)."""


Outcome = CapabilityChecked | FreezeDone | ThawDone | AutoThawDue | Stopping

_KERNEL_ANSWERED = {
    VssOp.CREATE,
    VssOp.DELETE,
    VssOp.GET_DM_INFO,
    VssOp.BU_COMPLETE,
    VssOp.AUTO_RECOVER,
}

# Host events: every state accepts each of them (the reply may be a failure).
_HOST_EVENTS = ("HOT_BACKUP", "FREEZE", "THAW", "KERNEL_ANSWERED", "INVALID")
_BUSY = (VssState.CHECKING, VssState.FREEZING, VssState.THAWING)

_TABLE: dict[tuple[VssState, str], VssState] = {
    (VssState.IDLE, "HOT_BACKUP"): VssState.CHECKING,
    (VssState.IDLE, "FREEZE"): VssState.FREEZING,
    (VssState.IDLE, "THAW"): VssState.IDLE,  # failure: nothing frozen
    (VssState.FROZEN, "HOT_BACKUP"): VssState.FROZEN,  # answered at once
    (VssState.FROZEN, "FREEZE"): VssState.FROZEN,  # failure: already frozen
    (VssState.FROZEN, "THAW"): VssState.THAWING,
    **{(s, "KERNEL_ANSWERED"): s for s in (VssState.IDLE, VssState.FROZEN)},
    **{(s, "INVALID"): s for s in VssState},
    **{(s, e): s for s in _BUSY for e in _HOST_EVENTS if e != "INVALID"},  # failure: busy
    # outcomes of the daemon's work
    (VssState.CHECKING, "capability_checked"): VssState.IDLE,
    (VssState.FREEZING, "frozen"): VssState.FROZEN,
    (VssState.FREEZING, "freeze_failed"): VssState.IDLE,
    (VssState.THAWING, "thawed"): VssState.IDLE,
    # events
    (VssState.FROZEN, "auto_thaw_due"): VssState.THAWING,
    (VssState.IDLE, "auto_thaw_due"): VssState.IDLE,  # lost the race with THAW: nothing
    (VssState.FROZEN, "stop"): VssState.THAWING,
    (VssState.IDLE, "stop"): VssState.IDLE,
}
TRANSITIONS = Transitions("VSS", _TABLE)


class VssRole:
    def __init__(self, *, auto_thaw: float, hbu_flag_in_status: bool = False) -> None:
        self.auto_thaw = auto_thaw
        self.hbu_flag_in_status = hbu_flag_in_status
        self.state = VssState.IDLE
        self.frozen_at: float | None = None
        self.deadline: float | None = None
        self.auto_thawed_at: float | None = None
        self._request = b""
        self._thaw_why: ThawWhy = "host"

    def _go(self, event: str) -> VssState:
        before = self.state
        self.state = TRANSITIONS.next(before, event)
        return before

    # -- host messages -----------------------------------------------------------

    def handle(self, message: bytes, now: float) -> Step[Action]:
        try:
            op = VssOp(VssMessage.decode(message).operation)
        except WireError as exc:
            self._go("INVALID")
            return self._fail(message, "invalid", f"malformed request ({exc}); ignored",
                              HvStatus.HV_INVALIDARG)
        event = "KERNEL_ANSWERED" if op in _KERNEL_ANSWERED else op.name
        before = self._go(event)
        if before in _BUSY:
            return self._fail(message, op.name, f"{op.name} while {before.value}; ignored")
        if event == "KERNEL_ANSWERED":
            flags = 0 if op is VssOp.GET_DM_INFO else None
            return self._reply(message, HvStatus.HV_S_OK, op.name,
                               "answered as the kernel does", flags)
        if op is VssOp.HOT_BACKUP:
            if before is VssState.FROZEN:
                return self._hot_backup_reply(message)
            self._request = message
            return Step(None, (CheckCapability(),))
        if op is VssOp.FREEZE:
            if before is VssState.FROZEN:
                since = now - (self.frozen_at if self.frozen_at is not None else now)
                return self._fail(
                    message, "FREEZE",
                    f"FREEZE while already frozen (for {since:.1f} s);"
                    " the filesystems stay frozen until THAW or auto-thaw",
                )
            self._request = message
            self.auto_thawed_at = None
            return Step(None, (Freeze(),))
        # THAW
        if before is VssState.FROZEN:
            self._request = message
            self._thaw_why = "host"
            return Step(None, (CancelAutoThaw(), Thaw("host")))
        if self.auto_thawed_at is not None:
            late = now - self.auto_thawed_at
            self.auto_thawed_at = None
            return self._fail(
                message, "THAW",
                f"THAW {late:.1f} s after the auto-thaw bound of"
                f" {self.auto_thaw:g} s had thawed the filesystems; the snapshot"
                " may not be consistent (raise vss.auto_thaw)",
            )
        return self._fail(message, "THAW", "THAW without a FREEZE: nothing is frozen")

    # -- outcomes and events --------------------------------------------------------

    def complete(self, outcome: Outcome, now: float) -> Step[Action]:
        if isinstance(outcome, CapabilityChecked):
            self._go("capability_checked")
            if not outcome.ok:
                return self._fail(self._request, "HOT_BACKUP", outcome.detail)
            return self._hot_backup_reply(self._request, outcome.detail)
        if isinstance(outcome, FreezeDone):
            if not outcome.ok:
                self._go("freeze_failed")
                return self._fail(self._request, "FREEZE", outcome.detail)
            self._go("frozen")
            self.frozen_at = now
            self.deadline = now + self.auto_thaw
            return self._reply(self._request, HvStatus.HV_S_OK, "FREEZE", outcome.detail,
                               first=(ArmAutoThaw(self.deadline),))
        if isinstance(outcome, ThawDone):
            self._go("thawed")
            self.frozen_at = self.deadline = None
            if self._thaw_why == "auto":
                self.auto_thawed_at = now
            if self._thaw_why != "host":
                return Step()  # no request outstanding
            if not outcome.ok:
                return self._fail(self._request, "THAW", outcome.detail)
            return self._reply(self._request, HvStatus.HV_S_OK, "THAW", outcome.detail)
        if isinstance(outcome, AutoThawDue):
            if self.state is VssState.FROZEN and self.deadline is not None and now < self.deadline:
                return Step()  # early (the timer and our clock may differ a little)
            if self._go("auto_thaw_due") is not VssState.FROZEN:
                return Step()
            self._thaw_why = "auto"
            return Step(None, (Thaw("auto"),))
        if self._go("stop") is not VssState.FROZEN:
            return Step()
        self._thaw_why = "stop"
        return Step(None, (CancelAutoThaw(), Thaw("stop")))

    # -- replies ----------------------------------------------------------------------

    def _hot_backup_reply(self, raw: bytes, detail: str = "") -> Step[Action]:
        status = HBU_STATUS_WITH_FLAG if self.hbu_flag_in_status else HvStatus.HV_S_OK
        return self._reply(raw, status, "HOT_BACKUP", detail, VSS_HBU_NO_AUTO_RECOVERY)

    def _fail(
        self, raw: bytes, op: str, detail: str, status: int = HvStatus.HV_E_FAIL
    ) -> Step[Action]:
        return self._reply(raw, status, op, detail)

    def _reply(
        self, raw: bytes, status: int, op: str, detail: str, flags: int | None = None,
        first: tuple[Action, ...] = (),
    ) -> Step[Action]:
        # HOT_BACKUP's status 2 is a success code, not a warning.
        level = INFO if status == HvStatus.HV_S_OK or op == "HOT_BACKUP" else WARNING
        name = status_name(status)
        said = Log(level, "%s -> %s%s", (op, name, f": {detail}" if detail else ""),
                   {"VSS_OP": op, "STATUS": name})
        return Step(vss_reply(raw, status, flags), (*first, said, Answered(op, name, detail)))
