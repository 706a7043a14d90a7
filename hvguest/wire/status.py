"""Status codes carried in replies to the host (protocol.md §1.3).

The C field is an ``int``; on every interface it travels as a 32-bit little-endian value,
so the enum holds the unsigned values.
"""

from __future__ import annotations

from enum import IntEnum


class HvStatus(IntEnum):
    HV_S_OK = 0x00000000
    HV_E_FAIL = 0x80004005
    HV_S_CONT = 0x80070103
    HV_ERROR_NOT_SUPPORTED = 0x80070032
    HV_ERROR_MACHINE_LOCKED = 0x800704F7
    HV_ERROR_DEVICE_NOT_CONNECTED = 0x8007048F
    HV_INVALIDARG = 0x80070057
    HV_GUID_NOTFOUND = 0x80041002
    HV_ERROR_ALREADY_EXISTS = 0x80070050
    HV_ERROR_DISK_FULL = 0x80070070


def status_name(status: int) -> str:
    """``HV_E_FAIL`` for a known code, ``0x........`` otherwise (for log lines)."""
    value = status & 0xFFFFFFFF
    try:
        return HvStatus(value).name
    except ValueError:
        return f"0x{value:08x}"
