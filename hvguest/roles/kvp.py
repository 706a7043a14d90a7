"""The KVP role: one decoded request in, one reply plus actions out (protocol.md §2).

Pure: no I/O and no clock. Lookups go through the ``KvpData`` interface the daemon
supplies (pool store, generated AUTO items, adapter addresses); side effects that take
time (applying a host-pushed IP configuration) come back as actions, and the daemon
reports their outcome with ``ip_config_done()`` to get the reply.

Differences from hv_kvp_daemon, all deliberate (see tests/sim/test_differential_kvp.py):
a bad pool byte, index, size or string gets a failure reply instead of a crash or a
silently wrong answer; GET delivers the stored value (the C daemon's copy leaves it
empty); GET on pool 2 also answers the generated items; unknown operations fail
instead of "succeeding"; adapter MACs compare case-insensitively; SET_IP_INFO strings go
through one strict grammar (``hvguest.wire.ipconfig``: no zone ids, nothing outside the
address alphabet) and anything else gets HV_INVALIDARG before any file is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from hvguest.errors import HvGuestError, LocalUsageError, WireError
from hvguest.wire.ipconfig import HostValueError, IpConfig, parse_ip_config
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


class KvpState(Enum):
    UNREGISTERED = "unregistered"
    READY = "ready"
    APPLYING = "applying"  # a SET_IP_INFO is being applied; its reply is pending


# state -> event -> next state; a missing entry is a bug in the caller.
TRANSITIONS: dict[KvpState, dict[str, KvpState]] = {
    KvpState.UNREGISTERED: {"registered": KvpState.READY, "lost": KvpState.UNREGISTERED},
    KvpState.READY: {
        "registered": KvpState.READY,
        "request": KvpState.READY,
        "set_ip_info": KvpState.APPLYING,
        "lost": KvpState.UNREGISTERED,
    },
    KvpState.APPLYING: {"applied": KvpState.READY, "lost": KvpState.UNREGISTERED},
}


class KvpData(Protocol):
    """What the role may look up. Methods raise HvGuestError on failure."""

    def get(self, pool: int, key: str) -> str | None: ...

    def set(self, pool: int, key: str, value: str) -> None: ...

    def delete(self, pool: int, key: str) -> bool: ...

    def item(self, pool: int, index: int) -> tuple[str, str] | None: ...

    def auto_items(self) -> Sequence[tuple[str, str]]: ...

    def ip_info(self, mac: str, addr_family: int) -> KvpIpInfo | None:
        """The adapter's addresses (``mac`` normalised, upper case); None: no such NIC."""
        ...


# -- actions -------------------------------------------------------------------


@dataclass(frozen=True)
class Log:
    level: int
    message: str
    args: tuple[object, ...] = ()
    pool: int | None = None


@dataclass(frozen=True)
class PoolChanged:
    pool: int


@dataclass(frozen=True)
class ApplyIpConfig:
    config: IpConfig


Action = Log | PoolChanged | ApplyIpConfig


@dataclass(frozen=True)
class Result:
    """``reply`` is None only while an ApplyIpConfig action is outstanding."""

    reply: bytes | None
    status: int
    op: str
    actions: tuple[Action, ...] = ()

    @property
    def status_name(self) -> str:
        return status_name(self.status)


@dataclass
class Counters:
    requests: int = 0
    failures: int = 0
    by_op: dict[str, int] = field(default_factory=dict)


# WireError.field -> status of the failure reply.
_FIELD_STATUS = {
    "length": HvStatus.HV_E_FAIL,
    "operation": HvStatus.HV_E_FAIL,
    "pool": HvStatus.HV_E_FAIL,
    "index": HvStatus.HV_S_CONT,  # no item can have that number: end of enumeration
}


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


class KvpRole:
    """Serves the kernel's KVP requests for one registration at a time."""

    def __init__(self, data: KvpData) -> None:
        self.data = data
        self.state = KvpState.UNREGISTERED
        self.version: str | None = None
        self.counters = Counters()
        self.last: tuple[str, str, float] | None = None  # op, status name, time
        self._pending: bytes | None = None  # the SET_IP_INFO being applied

    # -- state -------------------------------------------------------------

    def _move(self, event: str) -> None:
        try:
            self.state = TRANSITIONS[self.state][event]
        except KeyError:
            raise LocalUsageError(f"KVP role: event {event!r} in state {self.state.name}") from None

    def registered(self, version: str) -> None:
        self._move("registered")
        self.version = version

    def lost(self) -> None:
        """The transport failed: any pending SET_IP_INFO reply is moot."""
        self._move("lost")
        self._pending = None

    # -- requests ----------------------------------------------------------

    def handle(self, message: bytes, now: float) -> Result:
        """Answer one message read from the device."""
        try:
            request = decode_kvp_request(message)
        except WireError as exc:
            status = _FIELD_STATUS.get(exc.field or "", HvStatus.HV_INVALIDARG)
            op = _op_name(message)
            pool = message[1] if len(message) > 1 else None
            self._move("request")
            return self._done(
                kvp_reply(message, status),
                status,
                op,
                now,
                Log(logging.WARNING, "rejected KVP %s request: %s", (op, str(exc)), pool),
            )
        if isinstance(request, KvpRegister):
            self._move("request")
            return self._done(
                kvp_reply(message, HvStatus.HV_E_FAIL),
                HvStatus.HV_E_FAIL,
                "REGISTER",
                now,
                Log(logging.WARNING, "registration message received as a request; refused"),
            )
        if isinstance(request, KvpSetIpInfo):
            return self._set_ip_info(message, request, now)
        self._move("request")
        try:
            return self._serve(message, request, now)
        except HvGuestError as exc:
            op = KvpOp(message[0]).name
            return self._done(
                kvp_reply(message, HvStatus.HV_E_FAIL),
                HvStatus.HV_E_FAIL,
                op,
                now,
                Log(logging.ERROR, "KVP %s failed: %s", (op, str(exc)), message[1]),
            )

    def _serve(
        self,
        raw: bytes,
        request: KvpGet | KvpSet | KvpDelete | KvpEnumerate | KvpGetIpInfo,
        now: float,
    ) -> Result:
        if isinstance(request, KvpEnumerate):
            if request.pool == KvpPool.AUTO:
                items = self.data.auto_items()
                item = items[request.index] if request.index < len(items) else None
            else:
                item = self.data.item(request.pool, request.index)
            if item is None:
                return self._done(
                    kvp_reply(raw, HvStatus.HV_S_CONT), HvStatus.HV_S_CONT, "ENUMERATE", now
                )
            reply = kvp_enumerate_reply(raw, item[0], item[1])
            cut = _host_cut(item[0], item[1])
            if cut:
                note = Log(
                    logging.WARNING, "KVP item %r in pool %d: %s", (item[0][:64], request.pool, cut)
                )
                return self._done(reply, HvStatus.HV_S_OK, "ENUMERATE", now, note)
            return self._done(reply, HvStatus.HV_S_OK, "ENUMERATE", now)
        if isinstance(request, KvpGet):
            value = None
            if request.pool == KvpPool.AUTO:
                value = dict(self.data.auto_items()).get(request.key)
            if value is None:
                value = self.data.get(request.pool, request.key)
            if value is None:
                return self._done(
                    kvp_reply(raw, HvStatus.HV_S_CONT), HvStatus.HV_S_CONT, "GET", now
                )
            return self._done(kvp_get_reply(raw, value), HvStatus.HV_S_OK, "GET", now)
        if isinstance(request, KvpSet):
            self.data.set(request.pool, request.key, request.value)
            return self._done(
                kvp_reply(raw, HvStatus.HV_S_OK),
                HvStatus.HV_S_OK,
                "SET",
                now,
                PoolChanged(request.pool),
            )
        if isinstance(request, KvpDelete):
            if not self.data.delete(request.pool, request.key):
                return self._done(
                    kvp_reply(raw, HvStatus.HV_S_CONT), HvStatus.HV_S_CONT, "DELETE", now
                )
            return self._done(
                kvp_reply(raw, HvStatus.HV_S_OK),
                HvStatus.HV_S_OK,
                "DELETE",
                now,
                PoolChanged(request.pool),
            )
        return self._get_ip_info(raw, request, now)

    def _get_ip_info(self, raw: bytes, request: KvpGetIpInfo, now: float) -> Result:
        mac = normalise_mac(request.adapter_id)
        info = None if mac is None else self.data.ip_info(mac, request.addr_family)
        if info is None:
            return self._done(
                kvp_reply(raw, HvStatus.HV_E_FAIL),
                HvStatus.HV_E_FAIL,
                "GET_IP_INFO",
                now,
                Log(
                    logging.WARNING,
                    "GET_IP_INFO: no network interface has MAC %r",
                    (request.adapter_id,),
                ),
            )
        # The host's adapter_id stays as sent, as with the C daemon.
        reply_info = KvpIpInfo(
            request.adapter_id,
            info.addr_family,
            info.dhcp_enabled,
            info.ip_addr,
            info.sub_net,
            info.gate_way,
            info.dns_addr,
        )
        return self._done(kvp_ip_info_reply(raw, reply_info), HvStatus.HV_S_OK, "GET_IP_INFO", now)

    def _set_ip_info(self, raw: bytes, request: KvpSetIpInfo, now: float) -> Result:
        try:
            config = parse_ip_config(request)
        except HostValueError as exc:
            # str(exc) shows the offending value escaped and cut: safe for any log.
            self._move("request")
            return self._done(
                kvp_reply(raw, HvStatus.HV_INVALIDARG),
                HvStatus.HV_INVALIDARG,
                "SET_IP_INFO",
                now,
                Log(logging.WARNING, "SET_IP_INFO refused: %s", (str(exc),)),
            )
        self._move("set_ip_info")
        self._pending = raw
        return Result(None, HvStatus.HV_S_OK, "SET_IP_INFO", (ApplyIpConfig(config),))

    def ip_config_done(self, status: int, detail: str, now: float) -> Result:
        """The outcome of the ApplyIpConfig action: the reply to send."""
        raw = self._pending
        self._move("applied")
        self._pending = None
        if raw is None:  # pragma: no cover - the transition table forbids it
            raise LocalUsageError("KVP role: no SET_IP_INFO pending")
        level = logging.INFO if status == HvStatus.HV_S_OK else logging.ERROR
        return self._done(
            kvp_reply(raw, status),
            status,
            "SET_IP_INFO",
            now,
            Log(level, "SET_IP_INFO %s: %s", (status_name(status), detail)),
        )

    def _done(self, reply: bytes, status: int, op: str, now: float, *actions: Action) -> Result:
        self.counters.requests += 1
        self.counters.by_op[op] = self.counters.by_op.get(op, 0) + 1
        if status not in (HvStatus.HV_S_OK, HvStatus.HV_S_CONT):
            self.counters.failures += 1
        self.last = (op, _STATUS_NAMES.get(status) or status_name(status), now)
        return Result(reply, status, op, tuple(actions))


# What the kernel passes on to the host of an enumerated item, in UTF-16 code units.
HOST_KEY_UNITS = 254
HOST_VALUE_UNITS = 1022


def _units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _host_cut(key: str, value: str) -> str:
    """Why the host will see this item cut ("" if it will not): the kernel truncates
    silently, so at least the guest says so."""
    # a str of n characters is n..2n UTF-16 units: encode only when it may be too long
    if len(key) * 2 > HOST_KEY_UNITS and _units(key) > HOST_KEY_UNITS:
        return f"key is {_units(key)} UTF-16 units, the host sees the first {HOST_KEY_UNITS}"
    if len(value) * 2 > HOST_VALUE_UNITS and _units(value) > HOST_VALUE_UNITS:
        return f"value is {_units(value)} UTF-16 units, the host sees the first {HOST_VALUE_UNITS}"
    return ""


_STATUS_NAMES = {int(s): s.name for s in HvStatus}


def _op_name(message: bytes) -> str:
    if len(message) != KVP_MSG_SIZE:
        return "malformed"
    try:
        return KvpOp(message[0]).name
    except ValueError:
        return f"op {message[0]}"
