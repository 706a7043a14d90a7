"""Layout of ``hv_kvp_msg`` (7432 bytes) and ``hv_kvp_ip_msg`` (7428): sizes, offsets,
operation/pool/type enums. Shared by the daemon-side codecs (``kvp``), the host forms
(``kvp_host``) and the kernel model (``kvp_kernel``); import the names from ``kvp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from hvguest.wire._codec import pack_uint

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
    "HV_DRV_VERSION",
    "HV_KVP_EXCHANGE_MAX_KEY_SIZE",
    "HV_KVP_EXCHANGE_MAX_VALUE_SIZE",
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
    "KvpOp",
    "KvpPool",
    "MAX_ADAPTER_ID_SIZE",
    "MAX_GATEWAY_SIZE",
    "MAX_IP_ADDR_SIZE",
    "OP_OFFSET",
    "POOL_OFFSET",
    "REGISTER_VERSION_OFFSET",
    "REGISTER_VERSION_SIZE",
    "RegType",
    "STATUS_OFFSET",
]

KVP_MSG_SIZE = 7432
HV_KVP_EXCHANGE_MAX_KEY_SIZE = 512
HV_KVP_EXCHANGE_MAX_VALUE_SIZE = 2048
KVP_OP_REGISTER = 4
KVP_OP_REGISTER1 = 100
KVP_POOL_COUNT = 5
HV_DRV_VERSION = "3.1"

MAX_ADAPTER_ID_SIZE = 128
MAX_IP_ADDR_SIZE = 1024
MAX_GATEWAY_SIZE = 512

ADDR_FAMILY_NONE = 0
ADDR_FAMILY_IPV4 = 1
ADDR_FAMILY_IPV6 = 2

# Daemon-side offsets.
OP_OFFSET = 0
POOL_OFFSET = 1
STATUS_OFFSET = 0
GET_VALUE_TYPE_OFFSET = 4
GET_KEY_SIZE_OFFSET = 8
GET_VALUE_SIZE_OFFSET = 12
GET_KEY_OFFSET = 16
GET_VALUE_OFFSET = 528
ENUM_INDEX_OFFSET = 4
ENUM_VALUE_TYPE_OFFSET = 8
ENUM_KEY_SIZE_OFFSET = 12
ENUM_VALUE_SIZE_OFFSET = 16
ENUM_KEY_OFFSET = 20
ENUM_VALUE_OFFSET = 532
DELETE_KEY_SIZE_OFFSET = 4
DELETE_KEY_OFFSET = 8
REGISTER_VERSION_OFFSET = 4
REGISTER_VERSION_SIZE = 512

# Where the kernel reads a GET reply's value: the ENUMERATE value slot (see kvp_get_reply).
GET_REPLY_VALUE_OFFSET = ENUM_VALUE_OFFSET


class KvpOp(IntEnum):
    GET = 0
    SET = 1
    DELETE = 2
    ENUMERATE = 3
    GET_IP_INFO = 4
    SET_IP_INFO = 5


class KvpPool(IntEnum):
    EXTERNAL = 0
    GUEST = 1
    AUTO = 2
    AUTO_EXTERNAL = 3
    AUTO_INTERNAL = 4


class RegType(IntEnum):
    REG_SZ = 1
    REG_U32 = 4
    REG_U64 = 8


@dataclass(frozen=True)
class IpField:
    """One string of ``hv_kvp_ipaddr_value``: names, offsets and sizes on both sides."""

    name: str
    daemon_offset: int  # in hv_kvp_msg (daemon side)
    size: int  # bytes of the field (daemon: UTF-8 bytes; host: 2 * code units)
    kernel_limit: int  # the kernel's conversion limit (bytes to the daemon, units to the host)

    @property
    def host_offset(self) -> int:
        """Offset in the host's ``hv_kvp_ip_msg`` (2-byte shift, see protocol.md §2.2)."""
        return self.daemon_offset - 2


IP_ADAPTER_ID = IpField("adapter_id", 4, 256, MAX_ADAPTER_ID_SIZE)
IP_ADDR = IpField("ip_addr", 262, 2048, MAX_IP_ADDR_SIZE)
IP_SUB_NET = IpField("sub_net", 2310, 2048, MAX_IP_ADDR_SIZE)
IP_GATE_WAY = IpField("gate_way", 4358, 1024, MAX_GATEWAY_SIZE)
IP_DNS_ADDR = IpField("dns_addr", 5382, 2048, MAX_IP_ADDR_SIZE)
IP_ADDR_FAMILY_OFFSET = 260
IP_DHCP_ENABLED_OFFSET = 261
IP_STRING_FIELDS = (IP_ADAPTER_ID, IP_ADDR, IP_SUB_NET, IP_GATE_WAY, IP_DNS_ADDR)
KVP_IP_MSG_SIZE = 7428


def new_message(op: int, pool: int) -> bytearray:
    """A zero-filled daemon-side message with the header set."""
    buf = bytearray(KVP_MSG_SIZE)
    buf[OP_OFFSET] = pack_uint(op, 1, "operation")[0]
    buf[POOL_OFFSET] = pack_uint(pool, 1, "pool")[0]
    return buf
