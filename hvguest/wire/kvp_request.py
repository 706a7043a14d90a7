"""KVP requests as the daemon reads them: the daemon-side ``hv_kvp_msg`` (7432 bytes,
protocol.md §2.2) decoded into typed values, and encoded back (for the simulator and
the tests). Import the names from ``kvp``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import Self, TypeVar

from hvguest.errors import WireError
from hvguest.wire._codec import (
    check_length,
    check_min_length,
    cut_nul,
    pack_uint,
    put,
    terminated,
    utf8_bytes,
    utf8_field,
    utf8_text,
)
from hvguest.wire.kvp_layout import (
    ADDR_FAMILY_NONE,
    DELETE_KEY_OFFSET,
    DELETE_KEY_SIZE_OFFSET,
    ENUM_INDEX_OFFSET,
    GET_KEY_OFFSET,
    GET_KEY_SIZE_OFFSET,
    GET_VALUE_OFFSET,
    GET_VALUE_SIZE_OFFSET,
    HV_DRV_VERSION,
    HV_KVP_EXCHANGE_MAX_KEY_SIZE,
    HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    IP_ADAPTER_ID,
    IP_ADDR_FAMILY_OFFSET,
    IP_DHCP_ENABLED_OFFSET,
    IP_STRING_FIELDS,
    KVP_MSG_SIZE,
    KVP_OP_REGISTER1,
    KVP_POOL_COUNT,
    OP_OFFSET,
    REGISTER_VERSION_OFFSET,
    REGISTER_VERSION_SIZE,
    KvpOp,
    KvpPool,
    new_message,
)

__all__ = [
    "KVP_REGISTER_MSG",
    "KvpDelete",
    "KvpEnumerate",
    "KvpGet",
    "KvpGetIpInfo",
    "KvpIpInfo",
    "KvpRegister",
    "KvpRequest",
    "KvpSet",
    "KvpSetIpInfo",
    "decode_kvp_register",
    "decode_kvp_request",
]


def _key_bytes(key: str) -> bytes:
    return utf8_bytes(key, "key", HV_KVP_EXCHANGE_MAX_KEY_SIZE - 1)


def _put_sized(buf: bytearray, size_offset: int, offset: int, raw: bytes, size_field: str) -> None:
    """A string and its size field, which counts the NUL the zero-filled buffer supplies."""
    put(buf, size_offset, pack_uint(len(raw) + 1, 4, size_field))
    put(buf, offset, raw)


def _keyed_message(op: KvpOp, pool: int, raw_key: bytes, size_at: int, offset: int) -> bytearray:
    """A message of ``op`` carrying a key (GET, SET and DELETE start this way)."""
    buf = new_message(op, pool)
    _put_sized(buf, size_at, offset, raw_key, "key_size")
    return buf


@dataclass(frozen=True)
class KvpGet:
    pool: int
    key: str

    def encode(self) -> bytes:
        raw = _key_bytes(self.key)
        return bytes(_keyed_message(KvpOp.GET, self.pool, raw, GET_KEY_SIZE_OFFSET, GET_KEY_OFFSET))


@dataclass(frozen=True)
class KvpSet:
    pool: int
    key: str
    value: str

    def encode(self) -> bytes:
        raw_key = _key_bytes(self.key)
        raw_value = utf8_bytes(self.value, "value", HV_KVP_EXCHANGE_MAX_VALUE_SIZE - 1)
        buf = _keyed_message(KvpOp.SET, self.pool, raw_key, GET_KEY_SIZE_OFFSET, GET_KEY_OFFSET)
        _put_sized(buf, GET_VALUE_SIZE_OFFSET, GET_VALUE_OFFSET, raw_value, "value_size")
        return bytes(buf)


@dataclass(frozen=True)
class KvpDelete:
    pool: int
    key: str

    def encode(self) -> bytes:
        raw, op = _key_bytes(self.key), KvpOp.DELETE
        return bytes(_keyed_message(op, self.pool, raw, DELETE_KEY_SIZE_OFFSET, DELETE_KEY_OFFSET))


@dataclass(frozen=True)
class KvpEnumerate:
    pool: int
    index: int

    def encode(self) -> bytes:
        buf = new_message(KvpOp.ENUMERATE, self.pool)
        put(buf, ENUM_INDEX_OFFSET, pack_uint(self.index, 4, "index"))
        return bytes(buf)


@dataclass(frozen=True)
class KvpGetIpInfo:
    pool: int
    adapter_id: str
    addr_family: int = ADDR_FAMILY_NONE

    def encode(self) -> bytes:
        buf = new_message(KvpOp.GET_IP_INFO, self.pool)
        put(
            buf,
            IP_ADAPTER_ID.daemon_offset,
            utf8_field(self.adapter_id, "adapter_id", IP_ADAPTER_ID.size),
        )
        buf[IP_ADDR_FAMILY_OFFSET] = pack_uint(self.addr_family, 1, "addr_family")[0]
        return bytes(buf)


@dataclass(frozen=True)
class KvpIpInfo:
    """The IP configuration of one adapter (GET_IP_INFO reply, SET_IP_INFO request).

    Lists are ``;``-separated text, as in the C daemon.
    """

    adapter_id: str
    addr_family: int = ADDR_FAMILY_NONE
    dhcp_enabled: bool = False
    ip_addr: str = ""
    sub_net: str = ""
    gate_way: str = ""
    dns_addr: str = ""

    def values(self) -> tuple[str, int, bool, str, str, str, str]:
        """The fields in declaration order (the order ``KvpSetIpInfo`` continues with)."""
        return (
            self.adapter_id,
            self.addr_family,
            self.dhcp_enabled,
            self.ip_addr,
            self.sub_net,
            self.gate_way,
            self.dns_addr,
        )

    def write_into(self, buf: bytearray) -> None:
        """Store every field at its daemon-side offset (fields zero-filled after the NUL)."""
        for spec in IP_STRING_FIELDS:
            put(buf, spec.daemon_offset, utf8_field(getattr(self, spec.name), spec.name, spec.size))
        buf[IP_ADDR_FAMILY_OFFSET] = pack_uint(self.addr_family, 1, "addr_family")[0]
        buf[IP_DHCP_ENABLED_OFFSET] = 1 if self.dhcp_enabled else 0

    @classmethod
    def read_from(cls, buf: bytes, *, strict: bool) -> Self:
        """Read the fields from a daemon-side message.

        ``strict`` requires a NUL inside each field (requests from the kernel always
        have one); otherwise a field without NUL is taken whole.
        """
        check_min_length(buf, KVP_MSG_SIZE, "KVP IP info message")
        texts: dict[str, str] = {}
        for spec in IP_STRING_FIELDS:
            raw = bytes(buf[spec.daemon_offset : spec.daemon_offset + spec.size])
            raw = terminated(raw, spec.name) if strict else cut_nul(raw)
            texts[spec.name] = utf8_text(raw, spec.name)
        return cls(
            addr_family=buf[IP_ADDR_FAMILY_OFFSET],
            dhcp_enabled=buf[IP_DHCP_ENABLED_OFFSET] != 0,
            **texts,
        )


@dataclass(frozen=True)
class KvpSetIpInfo:
    pool: int
    adapter_id: str
    addr_family: int
    dhcp_enabled: bool
    ip_addr: str
    sub_net: str
    gate_way: str
    dns_addr: str

    @property
    def info(self) -> KvpIpInfo:
        return KvpIpInfo(*(getattr(self, field.name) for field in fields(KvpIpInfo)))

    def encode(self) -> bytes:
        buf = new_message(KvpOp.SET_IP_INFO, self.pool)
        self.info.write_into(buf)
        return bytes(buf)


@dataclass(frozen=True)
class KvpRegister:
    """The kernel's registration echo: byte 0 = 100, version string (e.g. "3.1") @4."""

    version: str = HV_DRV_VERSION

    def encode(self) -> bytes:
        buf = bytearray(KVP_MSG_SIZE)
        buf[OP_OFFSET] = KVP_OP_REGISTER1
        put(
            buf, REGISTER_VERSION_OFFSET, utf8_field(self.version, "version", REGISTER_VERSION_SIZE)
        )
        return bytes(buf)


KvpRequest = KvpGet | KvpSet | KvpDelete | KvpEnumerate | KvpGetIpInfo | KvpSetIpInfo | KvpRegister


_KVP_OPS = frozenset(int(op) for op in KvpOp)

# Registration message the daemon writes: byte 0 = REGISTER1, everything else zero.
KVP_REGISTER_MSG = bytes([KVP_OP_REGISTER1]) + bytes(KVP_MSG_SIZE - 1)


# ---------------------------------------------------------------------------
# Decoding requests (kernel -> daemon)


# op, pool, then the u32 words @4, @8 and @12 every operation reads some of: one call
# instead of a slice and an int per field (the decode is on every host request).
_HEADER = struct.Struct("<BBxxIII")
_POOLS = tuple(KvpPool)  # indexed, not KvpPool(n): an enum call per request costs


_R = TypeVar("_R", KvpGet, KvpSet, KvpDelete, KvpEnumerate)


def _checked(cls: type[_R], fields: dict[str, object]) -> _R:
    """``cls(**fields)`` for values the decoder has checked. A frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, several times slower
    than filling the instance dict, on every host request. (The request classes have
    no ``__post_init__`` and no slots; the round-trip tests compare with ``cls(...)``.)
    """
    request = object.__new__(cls)
    request.__dict__.update(fields)
    return request


def _text(buf: bytes, offset: int, size: int, field: str) -> str:
    """The UTF-8 string at ``offset`` that must end with a NUL within ``size`` bytes."""
    end = buf.find(b"\0", offset, offset + size)
    if end < 0:  # the same error as terminated() on the field's bytes
        terminated(bytes(buf[offset : offset + size]), field)
    try:
        return buf[offset:end].decode("utf-8")
    except UnicodeDecodeError:
        return utf8_text(bytes(buf[offset:end]), field)  # raises, naming the byte


def _check_key_size(key_size: int) -> None:
    if key_size == 0 or key_size > HV_KVP_EXCHANGE_MAX_KEY_SIZE:
        raise WireError(
            f"KVP key_size is {key_size}, must be 1..{HV_KVP_EXCHANGE_MAX_KEY_SIZE}",
            field="key_size",
            limit=HV_KVP_EXCHANGE_MAX_KEY_SIZE,
        )


def _check_value_size(value_size: int) -> None:
    if value_size > HV_KVP_EXCHANGE_MAX_VALUE_SIZE:
        raise WireError(
            f"KVP value_size is {value_size}, limit {HV_KVP_EXCHANGE_MAX_VALUE_SIZE}",
            field="value_size",
            limit=HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
        )


def decode_kvp_request(buf: bytes) -> KvpRequest:
    """Decode one 7432-byte message read from /dev/vmbus/hv_kvp."""
    check_length(buf, KVP_MSG_SIZE, "KVP message")
    op, pool_number, word4, word8, word12 = _HEADER.unpack_from(buf)
    if op == KVP_OP_REGISTER1:
        return KvpRegister(_text(buf, REGISTER_VERSION_OFFSET, REGISTER_VERSION_SIZE, "version"))
    if op not in _KVP_OPS:
        raise WireError(
            f"KVP operation is {op}, limit {max(KvpOp)}", field="operation", limit=int(max(KvpOp))
        )
    if pool_number >= KVP_POOL_COUNT:
        raise WireError(
            f"KVP pool is {pool_number}, limit {KVP_POOL_COUNT - 1}",
            field="pool",
            limit=KVP_POOL_COUNT - 1,
        )
    pool = _POOLS[pool_number]
    # GET and SET: key_size @8 (GET_KEY_SIZE_OFFSET), value_size @12; DELETE: key_size
    # @4; ENUMERATE: index @4.
    if op == KvpOp.GET:
        _check_value_size(word12)  # not filled by the kernel for GET but must still be sane
        _check_key_size(word8)
        return _checked(KvpGet, {"pool": pool, "key": _text(buf, GET_KEY_OFFSET, word8, "key")})
    if op == KvpOp.SET:
        _check_key_size(word8)
        key = _text(buf, GET_KEY_OFFSET, word8, "key")
        _check_value_size(word12)
        # value_size 0: the kernel forwards an unknown value_type as an empty value
        value = _text(buf, GET_VALUE_OFFSET, word12, "value") if word12 else ""
        return _checked(KvpSet, {"pool": pool, "key": key, "value": value})
    if op == KvpOp.DELETE:
        _check_key_size(word4)
        key = _text(buf, DELETE_KEY_OFFSET, word4, "key")
        return _checked(KvpDelete, {"pool": pool, "key": key})
    if op == KvpOp.ENUMERATE:
        if word4 >= 1 << 31:
            raise WireError(
                f"KVP enumerate index is {word4}, limit {(1 << 31) - 1}",
                field="index",
                limit=(1 << 31) - 1,
            )
        return _checked(KvpEnumerate, {"pool": pool, "index": word4})
    if op == KvpOp.GET_IP_INFO:
        adapter_id = _text(buf, IP_ADAPTER_ID.daemon_offset, IP_ADAPTER_ID.size, "adapter_id")
        return KvpGetIpInfo(pool, adapter_id, buf[IP_ADDR_FAMILY_OFFSET])
    return KvpSetIpInfo(pool, *KvpIpInfo.read_from(buf, strict=True).values())


def decode_kvp_register(buf: bytes) -> KvpRegister:
    """The kernel's registration echo; WireError unless it is one (op 100)."""
    request = decode_kvp_request(buf)
    if not isinstance(request, KvpRegister):
        raise WireError(
            f"KVP registration reply has operation {buf[0]}, expected {KVP_OP_REGISTER1}",
            field="operation",
            limit=KVP_OP_REGISTER1,
        )
    return request
