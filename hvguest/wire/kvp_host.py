"""Host wire forms of KVP messages (the body after the 28-byte IC header).

The daemon never sees these; the simulator uses them to play the host. Import the names
from ``kvp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from hvguest.errors import WireError
from hvguest.wire._codec import check_min_length, get_uint, pack_uint, put, utf16_bytes, utf16_text
from hvguest.wire.kvp_layout import (
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
    GET_VALUE_OFFSET,
    GET_VALUE_SIZE_OFFSET,
    GET_VALUE_TYPE_OFFSET,
    HV_KVP_EXCHANGE_MAX_KEY_SIZE,
    HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    IP_ADDR_FAMILY_OFFSET,
    IP_DHCP_ENABLED_OFFSET,
    IP_STRING_FIELDS,
    KVP_IP_MSG_SIZE,
    OP_OFFSET,
    POOL_OFFSET,
    KvpOp,
    RegType,
    new_message,
)

__all__ = [
    "HOST_KEY_UNITS",
    "HOST_VALUE_UNITS",
    "HostKvpIpMessage",
    "HostKvpMessage",
]

# ---------------------------------------------------------------------------
# Host wire forms (the body after the 28-byte IC header; the daemon never sees these)
#
# GET/SET/DELETE/ENUMERATE use the hv_kvp_msg layout with UTF-16LE strings whose sizes
# count bytes including the 2-byte NUL; GET_IP_INFO/SET_IP_INFO use hv_kvp_ip_msg (7428
# bytes, operation @0, pool @1, hv_kvp_ipaddr_value @2).

HOST_KEY_UNITS = HV_KVP_EXCHANGE_MAX_KEY_SIZE // 2
HOST_VALUE_UNITS = HV_KVP_EXCHANGE_MAX_VALUE_SIZE // 2


def _host_value_bytes(value: str | int, value_type: int) -> bytes:
    """The host's value field content for ``value_type`` (without zero fill)."""
    if value_type in (RegType.REG_U32, RegType.REG_U64):
        if not isinstance(value, int) or isinstance(value, bool):
            raise WireError(
                f"value must be an int for value_type {value_type}, got {value!r}",
                field="value",
                limit=value_type,
            )
        return pack_uint(value, int(value_type), "value")
    if not isinstance(value, str):
        raise WireError(
            f"value must be str for value_type {value_type}, got {value!r}", field="value"
        )
    return utf16_bytes(value, "value", HOST_VALUE_UNITS - 1) + b"\0\0"


def _host_value(raw: bytes, value_type: int) -> str | int:
    if value_type == RegType.REG_U32:
        return get_uint(raw, 0, 4)
    if value_type == RegType.REG_U64:
        return get_uint(raw, 0, 8)
    return utf16_text(raw, "value", require_nul=False)


# Bytes each host operation needs (the end of its last field).
_HOST_EXTENT: dict[int, int] = {
    KvpOp.GET: GET_VALUE_OFFSET + HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    KvpOp.SET: GET_VALUE_OFFSET + HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    KvpOp.DELETE: DELETE_KEY_OFFSET + HV_KVP_EXCHANGE_MAX_KEY_SIZE,
    KvpOp.ENUMERATE: ENUM_VALUE_OFFSET + HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
}


@dataclass(frozen=True)
class HostKvpMessage:
    """GET/SET/DELETE/ENUMERATE as the host sends them (and as the kernel answers them).

    ``value`` is an int for REG_U32/REG_U64, else a str. Sizes are derived on encoding:
    ``key_size`` = 2 * (units + 1) (0 for an ENUMERATE request, whose key is empty), and
    ``value_size`` = 2 * (units + 1) for a REG_SZ value or any non-empty string, 4/8 for
    integers, else 0. ``index`` is used by ENUMERATE only.
    """

    operation: int
    pool: int
    key: str = ""
    value: str | int = ""
    value_type: int = 0
    index: int = 0

    def encode(self) -> bytes:
        op = self.operation
        if op not in _HOST_EXTENT:
            raise WireError(
                f"host KVP operation is {op}, this form carries 0..3",
                field="operation",
                limit=int(KvpOp.ENUMERATE),
            )
        buf = new_message(op, self.pool)
        key = utf16_bytes(self.key, "key", HOST_KEY_UNITS - 1)
        value = _host_value_bytes(self.value, self.value_type)
        if isinstance(self.value, int):
            value_size = len(value)
        elif self.value_type == RegType.REG_SZ or self.value:
            value_size = len(value)
        else:
            value_size = 0
        if op == KvpOp.DELETE:
            put(buf, DELETE_KEY_SIZE_OFFSET, pack_uint(len(key) + 2, 4, "key_size"))
            put(buf, DELETE_KEY_OFFSET, key)
            return bytes(buf)
        if op == KvpOp.ENUMERATE:
            key_size = len(key) + 2 if (self.key or self.value_type) else 0
            put(buf, ENUM_INDEX_OFFSET, pack_uint(self.index, 4, "index"))
            put(buf, ENUM_VALUE_TYPE_OFFSET, pack_uint(self.value_type, 4, "value_type"))
            put(buf, ENUM_KEY_SIZE_OFFSET, pack_uint(key_size, 4, "key_size"))
            put(buf, ENUM_VALUE_SIZE_OFFSET, pack_uint(value_size, 4, "value_size"))
            put(buf, ENUM_KEY_OFFSET, key)
            put(buf, ENUM_VALUE_OFFSET, value)
            return bytes(buf)
        put(buf, GET_VALUE_TYPE_OFFSET, pack_uint(self.value_type, 4, "value_type"))
        put(buf, GET_KEY_SIZE_OFFSET, pack_uint(len(key) + 2, 4, "key_size"))
        put(buf, GET_VALUE_SIZE_OFFSET, pack_uint(value_size, 4, "value_size"))
        put(buf, GET_KEY_OFFSET, key)
        put(buf, GET_VALUE_OFFSET, value)
        return bytes(buf)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode a host KVP body; strings are cut at their first 0 unit. A key must
        have one within its field: neither the host nor the kernel (which converts at
        most 254 units and counts the 0 in key_size) sends a key that fills it, and
        ``encode`` could not write one back."""
        check_min_length(data, 2, "host KVP message")
        op, pool = data[OP_OFFSET], data[POOL_OFFSET]
        extent = _HOST_EXTENT.get(op)
        if extent is None:
            raise WireError(
                f"host KVP operation is {op}, this form carries 0..3",
                field="operation",
                limit=int(KvpOp.ENUMERATE),
            )
        check_min_length(data, extent, f"host KVP {KvpOp(op).name} message")

        def text(offset: int, size: int, field: str) -> str:
            return utf16_text(bytes(data[offset : offset + size]), field, require_nul=True)

        def item(
            key_offset: int, type_offset: int, value_offset: int
        ) -> tuple[str, str | int, int]:
            """Key, value and value type of a GET/SET or ENUMERATE body (key checked first)."""
            key = text(key_offset, HV_KVP_EXCHANGE_MAX_KEY_SIZE, "key")
            vtype = get_uint(data, type_offset, 4)
            value_raw = bytes(data[value_offset : value_offset + HV_KVP_EXCHANGE_MAX_VALUE_SIZE])
            return key, _host_value(value_raw, vtype), vtype

        if op == KvpOp.DELETE:
            return cls(op, pool, key=text(DELETE_KEY_OFFSET, HV_KVP_EXCHANGE_MAX_KEY_SIZE, "key"))
        if op == KvpOp.ENUMERATE:
            key, value, vtype = item(ENUM_KEY_OFFSET, ENUM_VALUE_TYPE_OFFSET, ENUM_VALUE_OFFSET)
            index = get_uint(data, ENUM_INDEX_OFFSET, 4)
            return cls(op, pool, key=key, value=value, value_type=vtype, index=index)
        key, value, vtype = item(GET_KEY_OFFSET, GET_VALUE_TYPE_OFFSET, GET_VALUE_OFFSET)
        return cls(op, pool, key=key, value=value, value_type=vtype)


@dataclass(frozen=True)
class HostKvpIpMessage:
    """GET_IP_INFO/SET_IP_INFO as ``hv_kvp_ip_msg`` (7428 bytes, UTF-16LE strings).

    A string may fill its whole field without a 0 unit (the kernel writes GET_IP_INFO
    answers that way), so encoding allows up to the field's full unit count.
    """

    operation: int
    pool: int
    adapter_id: str = ""
    addr_family: int = ADDR_FAMILY_NONE
    dhcp_enabled: bool = False
    ip_addr: str = ""
    sub_net: str = ""
    gate_way: str = ""
    dns_addr: str = ""

    def encode(self) -> bytes:
        if self.operation not in (KvpOp.GET_IP_INFO, KvpOp.SET_IP_INFO):
            raise WireError(
                f"host KVP IP operation is {self.operation}, expected 4 or 5",
                field="operation",
                limit=int(KvpOp.SET_IP_INFO),
            )
        buf = bytearray(KVP_IP_MSG_SIZE)
        buf[OP_OFFSET] = pack_uint(self.operation, 1, "operation")[0]
        buf[POOL_OFFSET] = pack_uint(self.pool, 1, "pool")[0]
        for spec in IP_STRING_FIELDS:
            put(
                buf,
                spec.host_offset,
                utf16_bytes(getattr(self, spec.name), spec.name, spec.size // 2),
            )
        buf[IP_ADDR_FAMILY_OFFSET - 2] = pack_uint(self.addr_family, 1, "addr_family")[0]
        buf[IP_DHCP_ENABLED_OFFSET - 2] = 1 if self.dhcp_enabled else 0
        return bytes(buf)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        check_min_length(data, KVP_IP_MSG_SIZE, "host KVP IP message")
        op = data[OP_OFFSET]
        if op not in (KvpOp.GET_IP_INFO, KvpOp.SET_IP_INFO):
            raise WireError(
                f"host KVP IP operation is {op}, expected 4 or 5",
                field="operation",
                limit=int(KvpOp.SET_IP_INFO),
            )
        texts = {
            spec.name: utf16_text(
                bytes(data[spec.host_offset : spec.host_offset + spec.size]),
                spec.name,
                require_nul=False,
            )
            for spec in IP_STRING_FIELDS
        }
        return cls(
            operation=op,
            pool=data[POOL_OFFSET],
            addr_family=data[IP_ADDR_FAMILY_OFFSET - 2],
            dhcp_enabled=data[IP_DHCP_ENABLED_OFFSET - 2] != 0,
            **texts,
        )
