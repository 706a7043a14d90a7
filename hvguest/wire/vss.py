"""``hv_vss_msg``: the 12-byte message on /dev/vmbus/hv_vss (protocol.md §3).

Layout: operation u8 @0, reserved[7] @1, flags u32 @8. In replies the first four bytes
are overwritten by the u32 status; bytes 4-11 are echoed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from hvguest.errors import WireError
from hvguest.wire._codec import (
    check_length,
    get_uint,
    pack_status,
    pack_uint,
    registration_echo,
)

VSS_MSG_SIZE = 12
VSS_OP_REGISTER = 128
VSS_OP_REGISTER1 = 129
VSS_HBU_NO_AUTO_RECOVERY = 5
VSS_FLAGS_OFFSET = 8
VSS_REGISTER_REPLY_SIZE = 4


class VssOp(IntEnum):
    CREATE = 0
    DELETE = 1
    HOT_BACKUP = 2
    GET_DM_INFO = 3
    BU_COMPLETE = 4
    FREEZE = 5
    THAW = 6
    AUTO_RECOVER = 7


_VSS_OPS = frozenset(int(op) for op in VssOp)


@dataclass(frozen=True)
class VssMessage:
    """A request as the kernel hands it to the daemon: op and flags, the rest zero."""

    operation: int
    flags: int = 0

    def encode(self) -> bytes:
        return (
            pack_uint(self.operation, 1, "operation") + bytes(7) + pack_uint(self.flags, 4, "flags")
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        check_length(data, VSS_MSG_SIZE, "VSS message")
        op = data[0]
        if op not in _VSS_OPS:
            raise WireError(
                f"VSS operation is {op}, limit {len(VssOp) - 1}",
                field="operation",
                limit=len(VssOp) - 1,
            )
        return cls(VssOp(op), get_uint(data, VSS_FLAGS_OFFSET, 4))


def vss_reply(request: bytes, status: int, flags: int | None = None) -> bytes:
    """The 12-byte reply: status over bytes 0-3, bytes 4-11 echoed from ``request``.

    ``request`` is padded with zeros or cut to 12 bytes so that even a malformed
    request gets a well-formed reply. ``flags`` (if given) replaces bytes 8-11.
    """
    body = bytes(request[:VSS_MSG_SIZE]).ljust(VSS_MSG_SIZE, b"\0")
    tail = body[4:8] + (body[8:12] if flags is None else pack_uint(flags, 4, "flags"))
    return pack_status(status) + tail


# Registration: byte 0 = REGISTER1, the rest zero; the kernel answers with a u32 129.
VSS_REGISTER_MSG = bytes([VSS_OP_REGISTER1]) + bytes(VSS_MSG_SIZE - 1)


def decode_vss_register_reply(buf: bytes) -> int:
    """Check the kernel's registration echo (4 bytes, u32 129) and return the version."""
    return registration_echo(buf, VSS_OP_REGISTER1, "VSS registration reply")
