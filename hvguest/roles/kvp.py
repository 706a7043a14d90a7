"""The KVP role: one request in, a ``Step`` (reply and actions) out (protocol.md §2).

Pure, on the one role contract (``hvguest.roles.step``): no I/O and no clock.
Lookups go through the read-only ``KvpView`` the daemon passes in (pool files,
generated AUTO items, adapter addresses). Everything that changes the machine is an
action the daemon carries out: ``WritePool`` and ``DeletePool`` (a SET or DELETE),
``ApplyIpConfig`` (a SET_IP_INFO), ``Log``. The reply to such a request depends on
the outcome, so ``handle()`` returns no reply for it; the daemon reports the outcome
through ``complete()``, which returns the reply.

Differences from hv_kvp_daemon, all deliberate (see tests/sim/test_differential_kvp.py):
a bad pool byte, index, size or string gets a failure reply instead of a crash or a
silently wrong answer; GET delivers the stored value (the C daemon's copy leaves it
empty); GET on pool 2 also answers the generated items; unknown operations fail
instead of "succeeding"; adapter MACs compare case-insensitively; SET_IP_INFO strings go
through one strict grammar (``hvguest.wire.ipconfig``: no zone ids, nothing outside the
address alphabet) and anything else gets HV_INVALIDARG before any file is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from hvguest.errors import HvGuestError, LocalUsageError, WireError
from hvguest.roles.step import Log, Step, Transitions
from hvguest.wire.kvp import (
    KVP_MSG_SIZE,
    KvpDelete,
    KvpEnumerate,
    KvpGet,
    KvpGetIpInfo,
    KvpIpInfo,
    KvpOp,
    KvpPool,
    KvpRegister,
    KvpSet,
    KvpSetIpInfo,
    decode_kvp_request,
    kvp_enumerate_reply,
    kvp_get_reply,
    kvp_ip_info_reply,
    kvp_reply,
)
from hvguest.wire.status import HvStatus, status_name

if TYPE_CHECKING:  # the parser (and ipaddress) loads on the first SET_IP_INFO
    from hvguest.wire.ipconfig import IpConfig

__all__ = [
    "ApplyIpConfig", "DeletePool", "IpApplied", "KvpRole", "KvpState", "KvpView", "Log",
    "PoolDone", "PoolFailed", "Step", "WritePool", "normalise_mac",
]

# Log levels as numbers: the role does not import logging.
WARNING, ERROR, INFO = 30, 40, 20
OK, CONT, FAIL = HvStatus.HV_S_OK, HvStatus.HV_S_CONT, HvStatus.HV_E_FAIL


class KvpState(Enum):
    # Members are singletons compared by identity: the identity hash is theirs too,
    # and C-level (Enum's own hashes the name in Python, on every transition lookup).
    __hash__ = object.__hash__

    UNREGISTERED = "unregistered"
    READY = "ready"
    WRITING = "writing"  # a SET or DELETE is being written; its reply is pending
    APPLYING = "applying"  # a SET_IP_INFO is being applied; its reply is pending


_R, _U, _W, _A = KvpState.READY, KvpState.UNREGISTERED, KvpState.WRITING, KvpState.APPLYING
# (state, message type or outcome) -> next state. Requests arrive one at a time (the
# kernel sends the next only after our reply): one while a reply is pending is misuse.
TRANSITIONS = Transitions("KVP", {
    (_U, "registered"): _R, (_U, "lost"): _U,
    (_R, "registered"): _R, (_R, "lost"): _U,
    **{(_R, op): _R for op in ("malformed", "REGISTER", "GET", "ENUMERATE", "GET_IP_INFO")},
    (_R, "SET"): _W, (_R, "DELETE"): _W, (_R, "SET_IP_INFO"): _A,
    (_W, "pool written"): _R, (_W, "lost"): _U,
    (_A, "ip applied"): _R, (_A, "lost"): _U,
    # The daemon answered the request itself (its work failed unexpectedly).
    (_R, "abandoned"): _R, (_W, "abandoned"): _R, (_A, "abandoned"): _R,
})


class KvpView(Protocol):
    """What the role may look up (read-only). Methods raise HvGuestError on failure."""

    def get(self, pool: int, key: str) -> str | None: ...

    def item(self, pool: int, index: int) -> tuple[str, str] | None: ...

    def auto_items(self) -> Sequence[tuple[str, str]]: ...

    def ip_info(self, mac: str, addr_family: int) -> KvpIpInfo | None:
        """The adapter's addresses (``mac`` normalised, upper case); None: no such NIC."""
        ...


# -- actions and their outcomes ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class WritePool:
    """Insert or update ``key`` in ``pool``; answer with PoolDone or PoolFailed."""

    pool: int
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class DeletePool:
    """Remove ``key`` from ``pool``; answer with PoolDone(found) or PoolFailed."""

    pool: int
    key: str


@dataclass(frozen=True, slots=True)
class ApplyIpConfig:
    """Apply the host's IP settings; answer with IpApplied."""

    config: IpConfig


Action = Log | WritePool | DeletePool | ApplyIpConfig


@dataclass(frozen=True, slots=True)
class PoolDone:
    """The write or delete happened (``found`` False: the key to delete was absent)."""

    found: bool = True


@dataclass(frozen=True, slots=True)
class PoolFailed:
    """Nothing was written. ``kind``: "full" (the record limit), "busy" (another
    writer held the lock past the bounded wait), "frozen" (a backup holds the
    filesystem) or "error"; ``detail`` says what and where."""

    detail: str
    kind: str = "error"


@dataclass(frozen=True, slots=True)
class IpApplied:
    status: int
    detail: str


Outcome = PoolDone | PoolFailed | IpApplied


@dataclass
class Counters:
    requests: int = 0
    failures: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    failures_by_op: dict[str, int] = field(default_factory=dict)


# WireError.field -> status of the failure reply.
_FIELD_STATUS = {
    "length": FAIL,
    "operation": FAIL,
    "pool": FAIL,
    "index": CONT,  # no item can have that number: end of enumeration
}
_STATUS_NAMES = {int(s): s.name for s in HvStatus}
_OP_NAMES: dict[type, str] = {
    KvpGet: "GET", KvpEnumerate: "ENUMERATE", KvpGetIpInfo: "GET_IP_INFO",
}
_NO_ACTIONS: tuple[Action, ...] = ()


class KvpRole:
    """Serves the kernel's KVP requests for one registration at a time."""

    def __init__(self, view: KvpView) -> None:
        self.view = view
        self.state = KvpState.UNREGISTERED
        self.version: str | None = None
        self.counters = Counters()
        self.last: tuple[str, str, float] | None = None  # op, status name, time
        self.last_status = int(OK)
        self._pending: tuple[bytes, str, int] | None = None  # request, op, pool

    # -- lifecycle ---------------------------------------------------------------

    def registered(self, version: str) -> None:
        self.state = TRANSITIONS.next(self.state, "registered")
        self.version = version

    def lost(self) -> None:
        """The transport failed: a pending reply is moot."""
        self.state = TRANSITIONS.next(self.state, "lost")
        self._pending = None

    def abandon(self) -> None:
        """The daemon answered the current request itself (carrying out its work
        failed unexpectedly): no reply is pending any more, the next request is new."""
        self.state = TRANSITIONS.next(self.state, "abandoned")
        self._pending = None

    # -- requests ----------------------------------------------------------------

    def handle(self, message: bytes, now: float) -> Step[Action]:
        """Answer one message read from the device (or ask for the work it needs)."""
        try:
            request = decode_kvp_request(message)
        except WireError as exc:
            status = _FIELD_STATUS.get(exc.field or "", HvStatus.HV_INVALIDARG)
            op = op_name(message)
            self.state = TRANSITIONS.next(self.state, "malformed")
            note = Log(WARNING, "rejected KVP %s request: %s", (op, str(exc)),
                       _pool_field(message[1]) if len(message) > 1 else {})
            return self._done(kvp_reply(message, status), status, op, now, (note,))
        # The reads first, found by one lookup on the class the decoder made.
        read = _OP_NAMES.get(type(request))
        if read is not None:
            self.state = TRANSITIONS.next(self.state, read)
            try:
                if isinstance(request, KvpGet):
                    return self._get(message, request, now)
                if isinstance(request, KvpEnumerate):
                    return self._enumerate(message, request, now)
                if isinstance(request, KvpGetIpInfo):
                    return self._get_ip_info(message, request, now)
            except HvGuestError as exc:
                return self._failed(message, read, message[1], str(exc), now)
        if isinstance(request, (KvpSet, KvpDelete)):  # a tuple: faster than a union
            return self._write(message, request)
        if isinstance(request, KvpRegister):
            self.state = TRANSITIONS.next(self.state, "REGISTER")
            note = Log(WARNING, "registration message received as a request; refused")
            return self._done(kvp_reply(message, FAIL), FAIL, "REGISTER", now, (note,))
        if not isinstance(request, KvpSetIpInfo):  # pragma: no cover - _OP_NAMES has it
            raise LocalUsageError(f"KVP role: no handler for {type(request).__name__}")
        return self._set_ip_info(message, request, now)

    def _enumerate(self, raw: bytes, request: KvpEnumerate, now: float) -> Step[Action]:
        if request.pool == KvpPool.AUTO:
            items = self.view.auto_items()
            item = items[request.index] if request.index < len(items) else None
        else:
            item = self.view.item(request.pool, request.index)
        if item is None:
            return self._done(kvp_reply(raw, CONT), CONT, "ENUMERATE", now)
        reply = kvp_enumerate_reply(raw, item[0], item[1])
        cut = host_cut(item[0], item[1])
        if cut:
            note = Log(WARNING, "KVP item %r in pool %d: %s", (item[0][:64], request.pool, cut))
            return self._done(reply, OK, "ENUMERATE", now, (note,))
        return self._done(reply, OK, "ENUMERATE", now)

    def _get(self, raw: bytes, request: KvpGet, now: float) -> Step[Action]:
        value = None
        if request.pool == KvpPool.AUTO:
            value = dict(self.view.auto_items()).get(request.key)
        if value is None:
            value = self.view.get(request.pool, request.key)
        if value is None:
            return self._done(kvp_reply(raw, CONT), CONT, "GET", now)
        return self._done(kvp_get_reply(raw, value), OK, "GET", now)

    def _get_ip_info(self, raw: bytes, request: KvpGetIpInfo, now: float) -> Step[Action]:
        mac = normalise_mac(request.adapter_id)
        info = None if mac is None else self.view.ip_info(mac, request.addr_family)
        if info is None:
            note = Log(WARNING, "GET_IP_INFO: no network interface has MAC %r",
                       (request.adapter_id,))
            return self._done(kvp_reply(raw, FAIL), FAIL, "GET_IP_INFO", now, (note,))
        # The host's adapter_id stays as sent, as with the C daemon.
        reply_info = KvpIpInfo(
            request.adapter_id, info.addr_family, info.dhcp_enabled, info.ip_addr,
            info.sub_net, info.gate_way, info.dns_addr,
        )
        return self._done(kvp_ip_info_reply(raw, reply_info), OK, "GET_IP_INFO", now)

    def _write(self, raw: bytes, request: KvpSet | KvpDelete) -> Step[Action]:
        if isinstance(request, KvpSet):
            self.state = TRANSITIONS.next(self.state, "SET")
            self._pending = (raw, "SET", request.pool)
            return Step(None, (WritePool(request.pool, request.key, request.value),))
        self.state = TRANSITIONS.next(self.state, "DELETE")
        self._pending = (raw, "DELETE", request.pool)
        return Step(None, (DeletePool(request.pool, request.key),))

    def _set_ip_info(self, raw: bytes, request: KvpSetIpInfo, now: float) -> Step[Action]:
        from hvguest.wire.ipconfig import HostValueError, parse_ip_config

        next_state = TRANSITIONS.next(self.state, "SET_IP_INFO")
        try:
            config = parse_ip_config(request)
        except HostValueError as exc:
            # str(exc) shows the offending value escaped and cut: safe for any log.
            note = Log(WARNING, "SET_IP_INFO refused: %s", (str(exc),))
            inval = HvStatus.HV_INVALIDARG
            return self._done(kvp_reply(raw, inval), inval, "SET_IP_INFO", now, (note,))
        self.state = next_state
        self._pending = (raw, "SET_IP_INFO", 0)
        return Step(None, (ApplyIpConfig(config),))

    # -- outcomes of actions --------------------------------------------------------

    def complete(self, outcome: Outcome, now: float) -> Step[Action]:
        """The outcome of the WritePool, DeletePool or ApplyIpConfig asked for: the reply."""
        event = "ip applied" if isinstance(outcome, IpApplied) else "pool written"
        self.state = TRANSITIONS.next(self.state, event)
        pending, self._pending = self._pending, None
        if pending is None:  # pragma: no cover - the transition table forbids it
            raise LocalUsageError("KVP role: no request pending")
        raw, op, pool = pending
        if isinstance(outcome, IpApplied):
            status = outcome.status
            level = INFO if status == OK else ERROR
            note = Log(level, "SET_IP_INFO %s: %s", (status_name(status), outcome.detail))
            return self._done(kvp_reply(raw, status), status, op, now, (note,))
        if isinstance(outcome, PoolFailed):
            return self._failed(raw, op, pool, outcome.detail, now)
        status = OK if outcome.found else CONT
        return self._done(kvp_reply(raw, status), status, op, now)

    def _failed(self, raw: bytes, op: str, pool: int, detail: str, now: float) -> Step[Action]:
        note = Log(ERROR, "KVP %s failed: %s", (op, detail), _pool_field(pool))
        return self._done(kvp_reply(raw, FAIL), FAIL, op, now, (note,))

    def _done(
        self, reply: bytes, status: int, op: str, now: float,
        actions: tuple[Action, ...] = _NO_ACTIONS,
    ) -> Step[Action]:
        counters = self.counters
        counters.requests += 1
        counters.by_op[op] = counters.by_op.get(op, 0) + 1
        if status != OK and status != CONT:
            counters.failures += 1
            counters.failures_by_op[op] = counters.failures_by_op.get(op, 0) + 1
        self.last = (op, _STATUS_NAMES.get(status) or status_name(status), now)
        self.last_status = status
        return Step(reply, actions)


_POOL_FIELDS = [{"POOL": str(n)} for n in range(256)]


def _pool_field(pool: int) -> dict[str, str]:
    return _POOL_FIELDS[pool]


def normalise_mac(text: str) -> str | None:
    """``00:15:5D:0A:0B:0C`` from any case and ``:``/``-``/no separator; None if not a MAC."""
    digits = "".join(ch for ch in text.strip() if ch not in ":-.")
    if len(digits) != 12:
        return None
    try:
        int(digits, 16)
    except ValueError:
        return None
    digits = digits.upper()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


# What the kernel passes on to the host of an enumerated item, in UTF-16 code units.
HOST_KEY_UNITS = 254
HOST_VALUE_UNITS = 1022


def _units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def host_cut(key: str, value: str) -> str:
    """Why the host will see this item cut ("" if it will not): the kernel truncates
    silently, so at least the guest says so."""
    # a str of n characters is n..2n UTF-16 units: encode only when it may be too long
    if len(key) * 2 > HOST_KEY_UNITS and _units(key) > HOST_KEY_UNITS:
        return f"key is {_units(key)} UTF-16 units, the host sees the first {HOST_KEY_UNITS}"
    if len(value) * 2 > HOST_VALUE_UNITS and _units(value) > HOST_VALUE_UNITS:
        return f"value is {_units(value)} UTF-16 units, the host sees the first {HOST_VALUE_UNITS}"
    return ""


def op_name(message: bytes) -> str:
    if len(message) != KVP_MSG_SIZE:
        return "malformed"
    try:
        return KvpOp(message[0]).name
    except ValueError:
        return f"op {message[0]}"
