"""KVP ("Data Exchange") messages: the daemon-side ``hv_kvp_msg`` (7432 bytes,
protocol.md §2.2/§2.3). This module is the import point for every KVP wire name: it
re-exports the layout constants (``kvp_layout``) and the host wire forms the kernel
converts from and to (``kvp_host``).

Daemon side: every string is NUL-terminated UTF-8; the kernel zero-fills every byte it
does not set. Offsets (from the start of the message):

* header: operation u8 @0, pool u8 @1; in replies the u32 status overlays @0-3
* GET/SET: value_type @4, key_size @8, value_size @12, key[512] @16, value[2048] @528
* ENUMERATE: index @4, value_type @8, key_size @12, value_size @16, key @20, value @532
* DELETE: key_size @4, key[512] @8
* IP info: adapter_id[256] @4, addr_family @260, dhcp_enabled @261, ip_addr[2048] @262,
  sub_net[2048] @2310, gate_way[1024] @4358, dns_addr[2048] @5382
* register: version[512] @4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from hvguest.errors import WireError
from hvguest.wire._codec import (
    check_length,
    check_min_length,
    cut_nul,
    get_uint,
    pack_status,
    pack_uint,
    put,
    terminated,
    utf8_bytes,
    utf8_field,
    utf8_text,
)
from hvguest.wire.kvp_host import (
    HOST_KEY_UNITS,
    HOST_VALUE_UNITS,
    HostKvpIpMessage,
    HostKvpMessage,
)
from hvguest.wire.kvp_layout import (
    ADDR_FAMILY_IPV4,
    ADDR_FAMILY_IPV6,
    ADDR_FAMILY_NONE,
    DELETE_KEY_OFFSET,
    DELETE_KEY_SIZE_OFFSET,
    ENUM_INDEX_OFFSET,
    ENUM_KEY_OFFSET,
    ENUM_KEY_SIZE_OFFSET,
    ENUM_VALUE_OFFSET,
    ENUM_VALUE_SIZE_OFFSET,
    ENUM_VALUE_TYPE_OFFSET,
    GET_KEY_OFFSET,
    GET_KEY_SIZE_OFFSET,
    GET_REPLY_VALUE_OFFSET,
    GET_VALUE_OFFSET,
    GET_VALUE_SIZE_OFFSET,
    GET_VALUE_TYPE_OFFSET,
    HV_DRV_VERSION,
    HV_KVP_EXCHANGE_MAX_KEY_SIZE,
    HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    IP_ADAPTER_ID,
    IP_ADDR,
    IP_ADDR_FAMILY_OFFSET,
    IP_DHCP_ENABLED_OFFSET,
    IP_DNS_ADDR,
    IP_GATE_WAY,
    IP_STRING_FIELDS,
    IP_SUB_NET,
    KVP_IP_MSG_SIZE,
    KVP_MSG_SIZE,
    KVP_OP_REGISTER,
    KVP_OP_REGISTER1,
    KVP_POOL_COUNT,
    MAX_ADAPTER_ID_SIZE,
    MAX_GATEWAY_SIZE,
    MAX_IP_ADDR_SIZE,
    OP_OFFSET,
    POOL_OFFSET,
    REGISTER_VERSION_OFFSET,
    REGISTER_VERSION_SIZE,
    STATUS_OFFSET,
    IpField,
    KvpOp,
    KvpPool,
    RegType,
    new_message,
)

__all__ = [
    "ADDR_FAMILY_IPV4",
    "ADDR_FAMILY_IPV6",
    "ADDR_FAMILY_NONE",
    "DELETE_KEY_OFFSET",
    "DELETE_KEY_SIZE_OFFSET",
    "ENUM_INDEX_OFFSET",
    "ENUM_KEY_OFFSET",
    "ENUM_KEY_SIZE_OFFSET",
    "ENUM_VALUE_OFFSET",
    "ENUM_VALUE_SIZE_OFFSET",
    "ENUM_VALUE_TYPE_OFFSET",
    "GET_KEY_OFFSET",
    "GET_KEY_SIZE_OFFSET",
    "GET_REPLY_VALUE_OFFSET",
    "GET_VALUE_OFFSET",
    "GET_VALUE_SIZE_OFFSET",
    "GET_VALUE_TYPE_OFFSET",
    "HOST_KEY_UNITS",
    "HOST_VALUE_UNITS",
    "HV_DRV_VERSION",
    "HV_KVP_EXCHANGE_MAX_KEY_SIZE",
    "HV_KVP_EXCHANGE_MAX_VALUE_SIZE",
    "HostKvpIpMessage",
    "HostKvpMessage",
    "IP_ADAPTER_ID",
    "IP_ADDR",
    "IP_ADDR_FAMILY_OFFSET",
    "IP_DHCP_ENABLED_OFFSET",
    "IP_DNS_ADDR",
    "IP_GATE_WAY",
    "IP_STRING_FIELDS",
    "IP_SUB_NET",
    "IpField",
    "KVP_IP_MSG_SIZE",
    "KVP_MSG_SIZE",
    "KVP_OP_REGISTER",
    "KVP_OP_REGISTER1",
    "KVP_POOL_COUNT",
    "KVP_REGISTER_MSG",
    "KvpDelete",
    "KvpEnumerate",
    "KvpGet",
    "KvpGetIpInfo",
    "KvpIpInfo",
    "KvpOp",
    "KvpPool",
    "KvpRegister",
    "KvpReply",
    "KvpRequest",
    "KvpSet",
    "KvpSetIpInfo",
    "MAX_ADAPTER_ID_SIZE",
    "MAX_GATEWAY_SIZE",
    "MAX_IP_ADDR_SIZE",
    "OP_OFFSET",
    "POOL_OFFSET",
    "REGISTER_VERSION_OFFSET",
    "REGISTER_VERSION_SIZE",
    "RegType",
    "STATUS_OFFSET",
    "decode_kvp_register",
    "decode_kvp_reply",
    "decode_kvp_request",
    "kvp_enumerate_reply",
    "kvp_get_reply",
    "kvp_ip_info_reply",
    "kvp_reply",
]


def _key_bytes(key: str) -> bytes:
    return utf8_bytes(key, "key", HV_KVP_EXCHANGE_MAX_KEY_SIZE - 1)


def _put_sized(buf: bytearray, size_offset: int, offset: int, raw: bytes, size_field: str) -> None:
    """A string and its size field, which counts the NUL the zero-filled buffer supplies."""
    put(buf, size_offset, pack_uint(len(raw) + 1, 4, size_field))
    put(buf, offset, raw)


@dataclass(frozen=True)
class KvpGet:
    pool: int
    key: str

    def encode(self) -> bytes:
        raw = _key_bytes(self.key)
        buf = new_message(KvpOp.GET, self.pool)
        _put_sized(buf, GET_KEY_SIZE_OFFSET, GET_KEY_OFFSET, raw, "key_size")
        return bytes(buf)


@dataclass(frozen=True)
class KvpSet:
    pool: int
    key: str
    value: str

    def encode(self) -> bytes:
        raw_key = _key_bytes(self.key)
        raw_value = utf8_bytes(self.value, "value", HV_KVP_EXCHANGE_MAX_VALUE_SIZE - 1)
        buf = new_message(KvpOp.SET, self.pool)
        _put_sized(buf, GET_KEY_SIZE_OFFSET, GET_KEY_OFFSET, raw_key, "key_size")
        _put_sized(buf, GET_VALUE_SIZE_OFFSET, GET_VALUE_OFFSET, raw_value, "value_size")
        return bytes(buf)


@dataclass(frozen=True)
class KvpDelete:
    pool: int
    key: str

    def encode(self) -> bytes:
        raw = _key_bytes(self.key)
        buf = new_message(KvpOp.DELETE, self.pool)
        _put_sized(buf, DELETE_KEY_SIZE_OFFSET, DELETE_KEY_OFFSET, raw, "key_size")
        return bytes(buf)


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
            adapter_id=texts["adapter_id"],
            addr_family=buf[IP_ADDR_FAMILY_OFFSET],
            dhcp_enabled=buf[IP_DHCP_ENABLED_OFFSET] != 0,
            ip_addr=texts["ip_addr"],
            sub_net=texts["sub_net"],
            gate_way=texts["gate_way"],
            dns_addr=texts["dns_addr"],
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
        return KvpIpInfo(
            self.adapter_id,
            self.addr_family,
            self.dhcp_enabled,
            self.ip_addr,
            self.sub_net,
            self.gate_way,
            self.dns_addr,
        )

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


def _sized_key(buf: bytes, size_offset: int, key_offset: int) -> str:
    """A key limited by its ``key_size`` (which counts the NUL)."""
    key_size = get_uint(buf, size_offset, 4)
    if key_size == 0 or key_size > HV_KVP_EXCHANGE_MAX_KEY_SIZE:
        raise WireError(
            f"KVP key_size is {key_size}, must be 1..{HV_KVP_EXCHANGE_MAX_KEY_SIZE}",
            field="key_size",
            limit=HV_KVP_EXCHANGE_MAX_KEY_SIZE,
        )
    raw = terminated(bytes(buf[key_offset : key_offset + key_size]), "key")
    return utf8_text(raw, "key")


def _value_size(buf: bytes) -> int:
    value_size = get_uint(buf, GET_VALUE_SIZE_OFFSET, 4)
    if value_size > HV_KVP_EXCHANGE_MAX_VALUE_SIZE:
        raise WireError(
            f"KVP value_size is {value_size}, limit {HV_KVP_EXCHANGE_MAX_VALUE_SIZE}",
            field="value_size",
            limit=HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
        )
    return value_size


def _set_value(buf: bytes) -> str:
    value_size = _value_size(buf)
    if value_size == 0:  # the kernel forwards an unknown value_type as an empty value
        return ""
    raw = terminated(bytes(buf[GET_VALUE_OFFSET : GET_VALUE_OFFSET + value_size]), "value")
    return utf8_text(raw, "value")


def decode_kvp_request(buf: bytes) -> KvpRequest:
    """Decode one 7432-byte message read from /dev/vmbus/hv_kvp."""
    check_length(buf, KVP_MSG_SIZE, "KVP message")
    op = buf[OP_OFFSET]
    if op == KVP_OP_REGISTER1:
        raw = terminated(
            bytes(buf[REGISTER_VERSION_OFFSET : REGISTER_VERSION_OFFSET + REGISTER_VERSION_SIZE]),
            "version",
        )
        return KvpRegister(utf8_text(raw, "version"))
    if op not in _KVP_OPS:
        raise WireError(
            f"KVP operation is {op}, limit {max(KvpOp)}", field="operation", limit=int(max(KvpOp))
        )
    pool_number = buf[POOL_OFFSET]
    if pool_number >= KVP_POOL_COUNT:
        raise WireError(
            f"KVP pool is {pool_number}, limit {KVP_POOL_COUNT - 1}",
            field="pool",
            limit=KVP_POOL_COUNT - 1,
        )
    pool = KvpPool(pool_number)
    if op == KvpOp.GET:
        _value_size(buf)  # not filled by the kernel for GET but must still be sane
        return KvpGet(pool, _sized_key(buf, GET_KEY_SIZE_OFFSET, GET_KEY_OFFSET))
    if op == KvpOp.SET:
        key = _sized_key(buf, GET_KEY_SIZE_OFFSET, GET_KEY_OFFSET)
        return KvpSet(pool, key, _set_value(buf))
    if op == KvpOp.DELETE:
        return KvpDelete(pool, _sized_key(buf, DELETE_KEY_SIZE_OFFSET, DELETE_KEY_OFFSET))
    if op == KvpOp.ENUMERATE:
        index = get_uint(buf, ENUM_INDEX_OFFSET, 4)
        if index >= 1 << 31:
            raise WireError(
                f"KVP enumerate index is {index}, limit {(1 << 31) - 1}",
                field="index",
                limit=(1 << 31) - 1,
            )
        return KvpEnumerate(pool, index)
    if op == KvpOp.GET_IP_INFO:
        raw = terminated(
            bytes(
                buf[IP_ADAPTER_ID.daemon_offset : IP_ADAPTER_ID.daemon_offset + IP_ADAPTER_ID.size]
            ),
            "adapter_id",
        )
        return KvpGetIpInfo(pool, utf8_text(raw, "adapter_id"), buf[IP_ADDR_FAMILY_OFFSET])
    info = KvpIpInfo.read_from(buf, strict=True)
    return KvpSetIpInfo(
        pool,
        info.adapter_id,
        info.addr_family,
        info.dhcp_enabled,
        info.ip_addr,
        info.sub_net,
        info.gate_way,
        info.dns_addr,
    )


# ---------------------------------------------------------------------------
# Replies (daemon -> kernel)


def kvp_reply(request: bytes, status: int) -> bytes:
    """The request echoed (padded or cut to 7432 bytes) with the u32 status @0."""
    buf = bytearray(bytes(request[:KVP_MSG_SIZE]).ljust(KVP_MSG_SIZE, b"\0"))
    put(buf, STATUS_OFFSET, pack_status(status))
    return bytes(buf)


def _put_fields(buf: bytearray, key: str | None, value: str) -> None:
    if key is not None:
        put(buf, ENUM_KEY_OFFSET, utf8_field(key, "key", HV_KVP_EXCHANGE_MAX_KEY_SIZE))
    put(buf, ENUM_VALUE_OFFSET, utf8_field(value, "value", HV_KVP_EXCHANGE_MAX_VALUE_SIZE))


def kvp_enumerate_reply(request: bytes, key: str, value: str) -> bytes:
    """Status 0 with the item's key @20 and value @532 (whole fields zero-filled).

    WireError if the key exceeds 511 or the value 2047 UTF-8 bytes.
    """
    buf = bytearray(kvp_reply(request, 0))
    _put_fields(buf, key, value)
    return bytes(buf)


def kvp_get_reply(request: bytes, value: str) -> bytes:
    """Status 0 with the value where the kernel reads it: offset 532.

    The kernel converts a GET reply's value from the ENUMERATE value slot (@532), not
    from the GET view's ``value`` (@528). The C daemon copies the value to @528 (and only
    ``value_size`` = 0 bytes of it), so with the C daemon the host always receives an
    empty string; writing @532 delivers the real value. The key @16..527 is untouched.
    """
    buf = bytearray(kvp_reply(request, 0))
    _put_fields(buf, None, value)
    return bytes(buf)


def kvp_ip_info_reply(request: bytes, info: KvpIpInfo) -> bytes:
    """Status 0 with every IP field (GET_IP_INFO answer) at its daemon-side offset."""
    buf = bytearray(kvp_reply(request, 0))
    info.write_into(buf)
    return bytes(buf)


@dataclass(frozen=True)
class KvpReply:
    """A daemon reply as the kernel reads it (for the simulator).

    ``key``/``value``/``ip_info`` are filled only for status 0 and the operations whose
    reply the kernel converts: ENUMERATE (key, value), GET (value), GET_IP_INFO (ip_info).
    """

    status: int
    key: str | None = None
    value: str | None = None
    ip_info: KvpIpInfo | None = None


def _reply_text(buf: bytes, offset: int, size: int, field: str) -> str:
    return utf8_text(cut_nul(bytes(buf[offset : offset + size])), field)


def decode_kvp_reply(op: int, buf: bytes) -> KvpReply:
    """Decode a daemon reply to a request of operation ``op``.

    Lenient like the kernel: at least 7432 bytes, strings cut at the first NUL (or taken
    whole), but invalid UTF-8 is a WireError (the kernel answers the host HV_E_FAIL).
    """
    check_min_length(buf, KVP_MSG_SIZE, "KVP reply")
    status = get_uint(buf, STATUS_OFFSET, 4)
    if status != 0:
        return KvpReply(status)
    if op == KvpOp.ENUMERATE:
        return KvpReply(
            status,
            key=_reply_text(buf, ENUM_KEY_OFFSET, HV_KVP_EXCHANGE_MAX_KEY_SIZE, "key"),
            value=_reply_text(buf, ENUM_VALUE_OFFSET, HV_KVP_EXCHANGE_MAX_VALUE_SIZE, "value"),
        )
    if op == KvpOp.GET:
        return KvpReply(
            status,
            value=_reply_text(buf, GET_REPLY_VALUE_OFFSET, HV_KVP_EXCHANGE_MAX_VALUE_SIZE, "value"),
        )
    if op == KvpOp.GET_IP_INFO:
        return KvpReply(status, ip_info=KvpIpInfo.read_from(buf, strict=False))
    return KvpReply(status)


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
