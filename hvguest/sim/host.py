"""The Hyper-V host's side of the IC services: builds requests, matches replies.

The host keeps at most one transaction outstanding per service (as Hyper-V does) and
sends NEGOTIATE before anything else. Requests are encoded with the wire host forms
(UTF-16LE strings); replies are decoded tolerantly, because the host must show what
the guest actually sent, even when it is not valid UTF-16.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hvguest.sim.kernel.timers import Timer, TimerQueue
from hvguest.wire.icmsg import (
    ICMSG_HDR_SIZE,
    ICMSG_REQUEST_FLAGS,
    IcHeader,
    IcMsgType,
    IcVersion,
    build_negotiate_request,
    parse_negotiate_response,
)
from hvguest.wire.kvp import HostKvpIpMessage, HostKvpMessage, KvpOp, RegType

# What a Windows host offers when it opens each channel (framework, service).
HOST_OFFERS: dict[str, tuple[list[IcVersion], list[IcVersion]]] = {
    "kvp": ([IcVersion(3, 0), IcVersion(1, 0)], [IcVersion(4, 0), IcVersion(3, 0)]),
    "vss": ([IcVersion(3, 0)], [IcVersion(5, 0)]),
    "fcopy": ([IcVersion(3, 0)], [IcVersion(1, 1)]),
}
MSGTYPES = {"kvp": IcMsgType.KVPEXCHANGE, "vss": IcMsgType.VSS, "fcopy": IcMsgType.FCOPY}

Sender = Callable[[int, bytes], None]
Decoder = Callable[[bytes], dict[str, Any]]


@dataclass
class HostReply:
    """One host transaction as the host saw it (``status`` None: no reply in time)."""

    service: str
    op: str
    request: dict[str, Any]
    status: int | None
    fields: dict[str, Any] = field(default_factory=dict)
    trans_id: int | None = None
    length: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "op": self.op,
            "request": self.request,
            "status": self.status,
            "fields": self.fields,
            "trans_id": self.trans_id,
            "length": self.length,
        }


@dataclass
class _Pending:
    op: str
    request: dict[str, Any]
    payload: bytes
    decode: Decoder
    done: Callable[[HostReply], None]


def utf16_field_text(raw: bytes) -> str:
    """A UTF-16LE field cut at its first 0 unit; invalid units are kept (surrogatepass)."""
    units = len(raw) // 2
    for i in range(units):
        if raw[2 * i] == 0 and raw[2 * i + 1] == 0:
            units = i
            break
    return raw[: 2 * units].decode("utf-16-le", errors="surrogatepass")


def _u32(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", buf, off)[0]) if len(buf) >= off + 4 else 0


def status_of(payload: bytes) -> int:
    return _u32(payload, 20)


class HostService:
    """One IC channel seen from the host."""

    def __init__(
        self,
        name: str,
        send: Sender,
        timers: TimerQueue,
        *,
        transcript: list[HostReply],
        timeout: float | None = None,
    ) -> None:
        self.name = name
        self._send = send
        self._timers = timers
        self._timeout = timeout
        self._queue: deque[_Pending] = deque()
        self._current: _Pending | None = None
        self._timer: Timer | None = None
        self._next_tid = 1
        self._ic_tid = 0
        self._transcript = transcript
        self.negotiated: tuple[IcVersion | None, IcVersion | None] = (None, None)
        fw, srv = HOST_OFFERS[name]
        self.msgver = srv[0]
        self._started = False
        self.submit("negotiate", {}, build_negotiate_request(fw, srv), self._decode_nego)

    def start(self) -> None:
        """Open the channel: the host's NEGOTIATE goes out first."""
        self._started = True
        self._kick()

    def reopen(self) -> None:
        """The guest end was reconnected (UIO): negotiate again before anything else."""
        if not self._started:
            self.start()
            return
        fw, srv = HOST_OFFERS[self.name]
        self._queue.appendleft(
            _Pending("negotiate", {}, build_negotiate_request(fw, srv), self._decode_nego,
                     lambda _r: None)
        )
        self._kick()

    def reset_channel(self, reason: str) -> None:
        """The channel was closed and opened again (guest hibernation): the outstanding
        request is lost, and NEGOTIATE comes first on the new channel."""
        fw, srv = HOST_OFFERS[self.name]
        self._queue.appendleft(
            _Pending("negotiate", {}, build_negotiate_request(fw, srv), self._decode_nego,
                     lambda _r: None)
        )
        self.abort(reason)
        self._kick()

    def abort(self, reason: str) -> None:
        """The channel went away: the outstanding request gets no reply."""
        cur, self._current = self._current, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if cur is not None:
            self._finish(cur, HostReply(self.name, cur.op, cur.request, None, {reason: True}))

    @property
    def busy(self) -> bool:
        return self._current is not None

    def ic_payload(self, body: bytes) -> bytes:
        self._ic_tid = (self._ic_tid + 1) & 0xFF
        header = IcHeader(
            pipe_flags=0,
            pipe_msgsize=ICMSG_HDR_SIZE - 8 + len(body),
            framever=IcVersion(3, 0),
            msgtype=MSGTYPES[self.name],
            msgver=self.msgver,
            msgsize=len(body),
            status=0,
            trans_id=self._ic_tid,
            flags=ICMSG_REQUEST_FLAGS,
        )
        return header.encode() + body

    def submit(
        self,
        op: str,
        request: dict[str, Any],
        payload: bytes,
        decode: Decoder | None = None,
        done: Callable[[HostReply], None] | None = None,
    ) -> None:
        self._queue.append(
            _Pending(op, request, payload, decode or (lambda _p: {}), done or (lambda _r: None))
        )
        self._kick()

    def _kick(self) -> None:
        if not self._started or self._current is not None or not self._queue:
            return
        self._current = self._queue.popleft()
        tid = self._next_tid
        self._next_tid += 1
        if self._timeout is not None:
            self._timer = self._timers.call_later(self._timeout, self._on_timeout)
        self._send(tid, self._current.payload)

    def deliver(self, trans_id: int, payload: bytes) -> None:
        """A guest response arrived (matched to the one outstanding request)."""
        cur, self._current = self._current, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if cur is None:
            self._transcript.append(
                HostReply(self.name, "unsolicited", {}, status_of(payload), {}, trans_id,
                          len(payload))
            )
            return
        try:
            fields = cur.decode(payload)
        except Exception as exc:  # noqa: BLE001 - a bad reply must not stop the host
            fields = {"decode_error": str(exc)}
        reply = HostReply(
            self.name, cur.op, cur.request, status_of(payload), fields, trans_id, len(payload)
        )
        self._finish(cur, reply)

    def _on_timeout(self) -> None:
        cur, self._current = self._current, None
        self._timer = None
        if cur is not None:
            self._finish(cur, HostReply(self.name, cur.op, cur.request, None, {"timeout": True}))

    def _finish(self, cur: _Pending, reply: HostReply) -> None:
        self._transcript.append(reply)
        try:
            cur.done(reply)
        finally:
            self._kick()

    def _decode_nego(self, payload: bytes) -> dict[str, Any]:
        _status, fw, srv = parse_negotiate_response(payload)
        self.negotiated = (fw, srv)
        if srv is not None:
            self.msgver = srv
        return {"framework": str(fw) if fw else None, "service": str(srv) if srv else None}


# -- KVP ---------------------------------------------------------------------------------

REG_TYPES = {"REG_SZ": RegType.REG_SZ, "REG_U32": RegType.REG_U32, "REG_U64": RegType.REG_U64}


def kvp_set_body(pool: int, key: str, value: str | int, value_type: str = "REG_SZ") -> bytes:
    vtype = REG_TYPES[value_type]
    if vtype != RegType.REG_SZ:
        value = int(value)
    return HostKvpMessage(KvpOp.SET, pool, key=key, value=value, value_type=vtype).encode()


def kvp_get_body(pool: int, key: str) -> bytes:
    return HostKvpMessage(KvpOp.GET, pool, key=key).encode()


def kvp_delete_body(pool: int, key: str) -> bytes:
    return HostKvpMessage(KvpOp.DELETE, pool, key=key).encode()


def kvp_enumerate_body(pool: int, index: int) -> bytes:
    return HostKvpMessage(KvpOp.ENUMERATE, pool, index=index).encode()


def kvp_ip_body(op: int, adapter_id: str, **kwargs: Any) -> bytes:
    return HostKvpIpMessage(op, 0, adapter_id=adapter_id, **kwargs).encode()


# Reply decoders: offsets are within the host body, after the IC header.
def decode_kvp_get(payload: bytes) -> dict[str, Any]:
    body = payload[ICMSG_HDR_SIZE:]
    return {
        "value_type": _u32(body, 4),
        "value_size": _u32(body, 12),
        "value": utf16_field_text(body[528 : 528 + 2048]),
    }


def decode_kvp_enumerate(payload: bytes) -> dict[str, Any]:
    body = payload[ICMSG_HDR_SIZE:]
    return {
        "index": _u32(body, 4),
        "value_type": _u32(body, 8),
        "key_size": _u32(body, 12),
        "value_size": _u32(body, 16),
        "key": utf16_field_text(body[20 : 20 + 512]),
        "value": utf16_field_text(body[532 : 532 + 2048]),
    }


IP_HOST_FIELDS = {
    "adapter_id": (2, 256),
    "ip_addr": (260, 2048),
    "sub_net": (2308, 2048),
    "gate_way": (4356, 1024),
    "dns_addr": (5380, 2048),
}


def decode_kvp_ip(payload: bytes) -> dict[str, Any]:
    body = payload[ICMSG_HDR_SIZE:]
    out: dict[str, Any] = {
        name: utf16_field_text(body[off : off + size])
        for name, (off, size) in IP_HOST_FIELDS.items()
    }
    out["addr_family"] = body[258] if len(body) > 258 else 0
    out["dhcp_enabled"] = body[259] if len(body) > 259 else 0
    return out


# -- VSS ---------------------------------------------------------------------------------

VSS_OPS = {"hot_backup": 2, "get_dm_info": 3, "freeze": 5, "thaw": 6, "bu_complete": 4}


def vss_body(op: int, flags: int = 0, size: int = 12) -> bytes:
    body = bytearray(max(size, 12))
    body[0] = op
    struct.pack_into("<I", body, 8, flags)
    return bytes(body)


def decode_vss(payload: bytes) -> dict[str, Any]:
    return {"flags": _u32(payload, ICMSG_HDR_SIZE + 8)}


# -- FCOPY -------------------------------------------------------------------------------

FCOPY_START, FCOPY_WRITE, FCOPY_COMPLETE, FCOPY_CANCEL = range(4)
OVER_WRITE = 0x1
CREATE_PATH = 0x2
DATA_FRAGMENT = 6144


def fcopy_start_body(name: str, path: str, flags: int, size: int) -> bytes:
    from hvguest.wire.fcopy import FcopyStart

    return FcopyStart(name, path, flags, size).encode(utf16=True)


def fcopy_write_body(offset: int, data: bytes) -> bytes:
    from hvguest.wire.fcopy import FcopyWrite

    return FcopyWrite(offset, data).encode()


def fcopy_op_body(op: int) -> bytes:
    # hv_fcopy_hdr only: the host sends COMPLETE/CANCEL as the bare 36-byte header.
    return struct.pack("<I", op) + bytes(32)
