"""VMBus integration-service framing: pipe + IC header and version negotiation (§1.4).

Every IC payload starts with ``vmbuspipe_hdr`` (8 bytes) and ``icmsg_hdr`` (20 bytes);
the message body follows at offset 28. A response is the request buffer modified in
place: same length, ``status`` @20 and ``icflags`` = TRANSACTION|RESPONSE @25.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from hvguest.errors import WireError
from hvguest.wire._codec import check_min_length, get_uint, pack_status, pack_uint
from hvguest.wire.status import HvStatus

ICMSG_HDR_SIZE = 28
ICMSG_MSGTYPE_OFFSET = 12
ICMSG_STATUS_OFFSET = 20
ICMSG_FLAGS_OFFSET = 25
ICMSG_SIZE_OFFSET = 18

ICMSGHDRFLAG_TRANSACTION = 1
ICMSGHDRFLAG_REQUEST = 2
ICMSGHDRFLAG_RESPONSE = 4
ICMSG_RESPONSE_FLAGS = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE
ICMSG_REQUEST_FLAGS = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST

# icmsg_negotiate: u16 icframe_vercnt, u16 icmsg_vercnt, u32 reserved, ic_version[]
NEGOTIATE_FIXED_SIZE = 8
IC_VERSION_SIZE = 4
IC_VERSION_NEGOTIATION_MAX_VER_COUNT = 100
NEGOTIATE_RESPONSE_ICMSGSIZE = 16

_HEADER = struct.Struct("<IIHHHHHHIBBH")
assert _HEADER.size == ICMSG_HDR_SIZE
# The two fields the per-packet path touches, without decoding the whole header.
_MSGTYPE = struct.Struct("<H")
_STATUS = struct.Struct("<I")


class IcMsgType(IntEnum):
    NEGOTIATE = 0
    HEARTBEAT = 1
    KVPEXCHANGE = 2
    SHUTDOWN = 3
    TIMESYNC = 4
    VSS = 5
    FCOPY = 7


@dataclass(frozen=True, order=True)
class IcVersion:
    """``ic_version``: u16 major, u16 minor; ``packed`` is the kernel's int form."""

    major: int
    minor: int

    @property
    def packed(self) -> int:
        return (self.major << 16) | self.minor

    @classmethod
    def from_packed(cls, value: int) -> Self:
        if not 0 <= value <= 0xFFFFFFFF:
            raise WireError(
                f"version {value!r} does not fit 32 bits", field="version", limit=0xFFFFFFFF
            )
        return cls(value >> 16, value & 0xFFFF)

    def encode(self) -> bytes:
        return pack_uint(self.major, 2, "major") + pack_uint(self.minor, 2, "minor")

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


UTIL_FW_VERSION = IcVersion(3, 0)
UTIL_WS2K8_FW_VERSION = IcVersion(1, 0)
UTIL_FW_VERSIONS = (UTIL_FW_VERSION, UTIL_WS2K8_FW_VERSION)

# What the guest offers, in preference order (kernel drivers and the UIO fcopy daemon).
SHUTDOWN_FW_VERSIONS = UTIL_FW_VERSIONS
SHUTDOWN_SRV_VERSIONS = (IcVersion(3, 2), IcVersion(3, 1), IcVersion(3, 0), IcVersion(1, 0))
TIMESYNC_FW_VERSIONS = UTIL_FW_VERSIONS
TIMESYNC_SRV_VERSIONS = (IcVersion(4, 0), IcVersion(3, 0), IcVersion(1, 0))
HEARTBEAT_FW_VERSIONS = UTIL_FW_VERSIONS
HEARTBEAT_SRV_VERSIONS = (IcVersion(3, 0), IcVersion(1, 0))
KVP_FW_VERSIONS = UTIL_FW_VERSIONS
KVP_SRV_VERSIONS = (IcVersion(4, 0), IcVersion(3, 0), IcVersion(1, 0))
VSS_FW_VERSIONS = (UTIL_FW_VERSION,)
VSS_SRV_VERSIONS = (IcVersion(5, 0),)
FCOPY_FW_VERSIONS = (UTIL_FW_VERSION,)
FCOPY_SRV_VERSIONS = (IcVersion(1, 1),)


@dataclass(frozen=True)
class IcHeader:
    """The first 28 bytes of an IC payload (``vmbuspipe_hdr`` + ``icmsg_hdr``)."""

    pipe_flags: int
    pipe_msgsize: int
    framever: IcVersion
    msgtype: int
    msgver: IcVersion
    msgsize: int
    status: int
    trans_id: int
    flags: int

    def encode(self) -> bytes:
        return b"".join(
            (
                pack_uint(self.pipe_flags, 4, "pipe_flags"),
                pack_uint(self.pipe_msgsize, 4, "pipe_msgsize"),
                self.framever.encode(),
                pack_uint(self.msgtype, 2, "msgtype"),
                self.msgver.encode(),
                pack_uint(self.msgsize, 2, "msgsize"),
                pack_status(self.status),
                pack_uint(self.trans_id, 1, "trans_id"),
                pack_uint(self.flags, 1, "flags"),
                bytes(2),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode the header at the start of ``data`` (which may carry a body after it)."""
        check_min_length(data, ICMSG_HDR_SIZE, "IC payload")
        (pflags, psize, fmaj, fmin, mtype, mmaj, mmin, msize, status, tid, flags, _) = (
            _HEADER.unpack_from(data, 0)
        )
        return cls(
            pflags,
            psize,
            IcVersion(fmaj, fmin),
            mtype,
            IcVersion(mmaj, mmin),
            msize,
            status,
            tid,
            flags,
        )


def ic_msgtype(payload: bytes | bytearray | memoryview) -> int:
    """``icmsgtype`` of an IC payload the caller checked to hold a whole header."""
    msgtype: int = _MSGTYPE.unpack_from(payload, ICMSG_MSGTYPE_OFFSET)[0]
    return msgtype


def mark_response(buffer: bytearray | memoryview, status: int) -> None:
    """Turn the request in ``buffer`` (at least a header long) into its response in
    place: status @20, icflags = TRANSACTION|RESPONSE @25, everything else kept."""
    _STATUS.pack_into(buffer, ICMSG_STATUS_OFFSET, status & 0xFFFFFFFF)
    buffer[ICMSG_FLAGS_OFFSET] = ICMSG_RESPONSE_FLAGS


def ic_response(payload: bytes, status: int) -> bytes:
    """The in-place response: same bytes and length, status @20, icflags = 5 @25."""
    check_min_length(payload, ICMSG_HDR_SIZE, "IC payload")
    out = bytearray(payload)
    mark_response(out, status)
    return bytes(out)


def build_negotiate_request(
    fw: Sequence[IcVersion],
    srv: Sequence[IcVersion],
    *,
    msgver: IcVersion = IcVersion(1, 0),
    framever: IcVersion = IcVersion(1, 0),
    trans_id: int = 0,
    pipe_flags: int = 0,
) -> bytes:
    """A host NEGOTIATE payload offering ``fw`` framework and ``srv`` service versions."""
    body = (
        pack_uint(len(fw), 2, "icframe_vercnt")
        + pack_uint(len(srv), 2, "icmsg_vercnt")
        + bytes(4)
        + b"".join(v.encode() for v in (*fw, *srv))
    )
    header = IcHeader(
        pipe_flags=pipe_flags,
        pipe_msgsize=ICMSG_HDR_SIZE - 8 + len(body),
        framever=framever,
        msgtype=IcMsgType.NEGOTIATE,
        msgver=msgver,
        msgsize=len(body),
        status=0,
        trans_id=trans_id,
        flags=ICMSG_REQUEST_FLAGS,
    )
    return header.encode() + body


def _pick(offered: list[IcVersion], ours: Sequence[IcVersion]) -> IcVersion | None:
    """Our first version (preference order) that the host offered exactly."""
    for version in ours:
        if version in offered:
            return version
    return None


def negotiate_response(
    payload: bytes, fw: Sequence[IcVersion], srv: Sequence[IcVersion]
) -> tuple[bytes, IcVersion | None, IcVersion | None]:
    """Answer a host NEGOTIATE exactly as the kernel's ``vmbus_prep_negotiate_resp``.

    Returns the response payload (same length as ``payload``) and the chosen framework
    and service versions, both None when negotiation failed. On failure the status is
    HV_E_FAIL (what the UIO daemon sends; kernel drivers leave the host's value) and the
    version counts are 0/0. Only bytes inside ``payload`` are written: the kernel writes
    the two version slots even when the packet is too short for them, but those bytes
    are never sent.
    """
    check_min_length(payload, ICMSG_HDR_SIZE, "IC payload")
    out = bytearray(payload)
    out[ICMSG_FLAGS_OFFSET] = ICMSG_RESPONSE_FLAGS

    def fail() -> tuple[bytes, None, None]:
        out[ICMSG_STATUS_OFFSET : ICMSG_STATUS_OFFSET + 4] = pack_status(HvStatus.HV_E_FAIL)
        return bytes(out), None, None

    base = ICMSG_HDR_SIZE
    if len(payload) < base + 4:  # the kernel returns before touching anything else
        return fail()
    out[ICMSG_SIZE_OFFSET : ICMSG_SIZE_OFFSET + 2] = pack_uint(
        NEGOTIATE_RESPONSE_ICMSGSIZE, 2, "icmsgsize"
    )
    n = get_uint(payload, base, 2)
    m = get_uint(payload, base + 2, 2)

    fw_pick: IcVersion | None = None
    srv_pick: IcVersion | None = None
    # On an invalid packet the kernel writes the raw counts as "major" of the two slots.
    slot0, slot1 = IcVersion(n, 0), IcVersion(m, 0)
    valid = (
        n <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT
        and m <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT
        and base + NEGOTIATE_FIXED_SIZE + IC_VERSION_SIZE * (n + m) <= len(payload)
    )
    if valid:
        start = base + NEGOTIATE_FIXED_SIZE
        offered = [
            IcVersion(get_uint(payload, start + 4 * i, 2), get_uint(payload, start + 4 * i + 2, 2))
            for i in range(n + m)
        ]
        fw_pick = _pick(offered[:n], fw)
        if fw_pick is not None:
            slot0 = fw_pick
            srv_pick = _pick(offered[n:], srv)
            if srv_pick is not None:
                slot1 = srv_pick
    ok = fw_pick is not None and srv_pick is not None
    count = 1 if ok else 0
    tail = (
        pack_uint(count, 2, "icframe_vercnt")
        + pack_uint(count, 2, "icmsg_vercnt")
        + bytes(out[base + 4 : base + 8]).ljust(4, b"\0")
        + slot0.encode()
        + slot1.encode()
    )
    room = len(out) - base
    out[base : base + min(room, len(tail))] = tail[:room]
    if not ok:
        return fail()
    out[ICMSG_STATUS_OFFSET : ICMSG_STATUS_OFFSET + 4] = pack_status(HvStatus.HV_S_OK)
    return bytes(out), fw_pick, srv_pick


def parse_negotiate_response(payload: bytes) -> tuple[int, IcVersion | None, IcVersion | None]:
    """Host side: (status, framework, service) of a guest's NEGOTIATE response.

    The versions are None unless the guest answered with counts 1/1.
    """
    header = IcHeader.decode(payload)
    check_min_length(payload, ICMSG_HDR_SIZE + 4, "NEGOTIATE response", field="icframe_vercnt")
    n = get_uint(payload, ICMSG_HDR_SIZE, 2)
    m = get_uint(payload, ICMSG_HDR_SIZE + 2, 2)
    if n != 1 or m != 1:
        return header.status, None, None
    start = ICMSG_HDR_SIZE + NEGOTIATE_FIXED_SIZE
    check_min_length(payload, start + 8, "NEGOTIATE response", field="icversion_data")
    fw = IcVersion(get_uint(payload, start, 2), get_uint(payload, start + 2, 2))
    srv = IcVersion(get_uint(payload, start + 4, 2), get_uint(payload, start + 6, 2))
    return header.status, fw, srv
