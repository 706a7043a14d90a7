"""VMBus packets and ring header (§1.4, §5.3, §5.4) and the kernel-only IC bodies (§6).

A packet is a 16-byte ``vmpacket_descriptor``, the payload zero-padded to a multiple
of 8, and (inside a ring) an 8-byte trailer that readers skip. Heartbeat, shutdown and
time-sync bodies sit at IC offset 28 (after the IC header, see ``icmsg``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from hvguest.errors import WireError
from hvguest.wire._codec import check_length, check_min_length, get_uint, pack_fields, pack_uint

VM_PKT_DATA_INBAND = 6
VM_PKT_COMP = 11
VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED = 1
PACKET_DESCRIPTOR_SIZE = 16
PACKET_TRAILER_SIZE = 8
PACKET_ALIGN = 8

RING_HEADER_SIZE = 4096
WRITE_INDEX_OFFSET = 0
READ_INDEX_OFFSET = 4
INTERRUPT_MASK_OFFSET = 8
PENDING_SEND_SZ_OFFSET = 12
FEATURE_BITS_OFFSET = 64
FEAT_PENDING_SEND_SZ = 1

_DESCRIPTOR = struct.Struct("<HHHHQ")


@dataclass(frozen=True)
class VmPacketDescriptor:
    """``vmpacket_descriptor``: offsets and lengths are in 8-byte units."""

    type: int
    offset8: int
    len8: int
    flags: int
    trans_id: int

    def encode(self) -> bytes:
        return pack_fields(
            self, (("type", 2), ("offset8", 2), ("len8", 2), ("flags", 2), ("trans_id", 8))
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        check_length(data, PACKET_DESCRIPTOR_SIZE, "packet descriptor")
        ptype, offset8, len8, flags, trans_id = _DESCRIPTOR.unpack(data)
        if offset8 < PACKET_DESCRIPTOR_SIZE // 8:
            raise WireError(
                f"packet offset8 is {offset8}, minimum {PACKET_DESCRIPTOR_SIZE // 8}",
                field="offset8",
                limit=PACKET_DESCRIPTOR_SIZE // 8,
            )
        if offset8 > len8:
            raise WireError(
                f"packet offset8 is {offset8}, beyond len8 {len8}", field="offset8", limit=len8
            )
        return cls(ptype, offset8, len8, flags, trans_id)

    @property
    def packet_size(self) -> int:
        """Bytes of descriptor + payload + padding (without the ring trailer)."""
        return self.len8 * 8


def padded_length(length: int) -> int:
    """``length`` rounded up to the 8-byte packet alignment."""
    return (length + PACKET_ALIGN - 1) // PACKET_ALIGN * PACKET_ALIGN


def build_inband_packet(payload: bytes, trans_id: int, *, flags: int = 0) -> bytes:
    """Descriptor + payload zero-padded to a multiple of 8 (no ring trailer)."""
    size = padded_length(PACKET_DESCRIPTOR_SIZE + len(payload))
    if size // 8 > 0xFFFF:
        raise WireError(
            f"packet payload is {len(payload)} bytes, too long for a 16-bit len8",
            field="len8",
            limit=0xFFFF * 8 - PACKET_DESCRIPTOR_SIZE,
        )
    desc = VmPacketDescriptor(
        VM_PKT_DATA_INBAND, PACKET_DESCRIPTOR_SIZE // 8, size // 8, flags, trans_id
    )
    return (desc.encode() + payload).ljust(size, b"\0")


def split_packet(packet: bytes) -> tuple[VmPacketDescriptor, bytes]:
    """Descriptor and payload (bytes ``[offset8*8, len8*8)``, padding included)."""
    check_min_length(packet, PACKET_DESCRIPTOR_SIZE, "packet")
    desc = VmPacketDescriptor.decode(bytes(packet[:PACKET_DESCRIPTOR_SIZE]))
    check_min_length(packet, desc.packet_size, "packet (len8 * 8)")
    return desc, bytes(packet[desc.offset8 * 8 : desc.packet_size])


def packet_trailer(start_index: int) -> bytes:
    """The 8-byte trailer after a packet in a ring: its start write index << 32."""
    return pack_uint(start_index << 32, 8, "trailer")


@dataclass(frozen=True)
class RingHeader:
    """The fields of a ring buffer's 4096-byte header page."""

    write_index: int
    read_index: int
    interrupt_mask: int
    pending_send_sz: int
    feature_bits: int

    def encode(self) -> bytes:
        out = bytearray(RING_HEADER_SIZE)
        for offset, name in (
            (WRITE_INDEX_OFFSET, "write_index"),
            (READ_INDEX_OFFSET, "read_index"),
            (INTERRUPT_MASK_OFFSET, "interrupt_mask"),
            (PENDING_SEND_SZ_OFFSET, "pending_send_sz"),
            (FEATURE_BITS_OFFSET, "feature_bits"),
        ):
            out[offset : offset + 4] = pack_uint(getattr(self, name), 4, name)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode from the start of a ring (at least the 68 bytes that hold fields)."""
        check_min_length(data, FEATURE_BITS_OFFSET + 4, "ring header")
        return cls(
            get_uint(data, WRITE_INDEX_OFFSET, 4),
            get_uint(data, READ_INDEX_OFFSET, 4),
            get_uint(data, INTERRUPT_MASK_OFFSET, 4),
            get_uint(data, PENDING_SEND_SZ_OFFSET, 4),
            get_uint(data, FEATURE_BITS_OFFSET, 4),
        )


# ---------------------------------------------------------------------------
# Kernel-only IC message bodies (at IC offset 28)

HEARTBEAT_MSG_SIZE = 40
HEARTBEAT_MIN_SIZE = 8  # the kernel accepts a payload of 28 + 8 bytes
SHUTDOWN_MSG_SIZE = 2060
SHUTDOWN_MESSAGE_SIZE = 2048
TIMESYNC_REF_MSG_SIZE = 22
TIMESYNC_MSG_SIZE = 25

ICTIMESYNCFLAG_PROBE = 0
ICTIMESYNCFLAG_SYNC = 1
ICTIMESYNCFLAG_SAMPLE = 2

SHUTDOWN_FLAG_FORCE = 1
SHUTDOWN_FLAG_REBOOT = 2
SHUTDOWN_FLAG_HIBERNATE = 4

_TIMESYNC_REF_LAYOUT = (
    ("parenttime", 8),
    ("vmreferencetime", 8),
    ("flags", 1),
    ("leapflags", 1),
    ("stratum", 1),
)
_TIMESYNC_LAYOUT = (("parenttime", 8), ("childtime", 8), ("roundtriptime", 8), ("flags", 1))


@dataclass(frozen=True)
class HeartbeatMsg:
    """``heartbeat_msg_data``: u64 seq_num @0, reserved u32[8] @8 (40 bytes)."""

    seq_num: int

    def encode(self) -> bytes:
        return pack_uint(self.seq_num, 8, "seq_num") + bytes(HEARTBEAT_MSG_SIZE - 8)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        check_min_length(data, HEARTBEAT_MIN_SIZE, "heartbeat body")
        return cls(get_uint(data, 0, 8))


@dataclass(frozen=True)
class ShutdownMsg:
    """``shutdown_msg_data`` (2060 bytes); ``display_message`` is raw, trailing NULs dropped."""

    reason_code: int
    timeout_seconds: int
    flags: int
    display_message: bytes = b""

    def encode(self) -> bytes:
        if len(self.display_message) > SHUTDOWN_MESSAGE_SIZE:
            raise WireError(
                f"display_message is {len(self.display_message)} bytes,"
                f" limit {SHUTDOWN_MESSAGE_SIZE}",
                field="display_message",
                limit=SHUTDOWN_MESSAGE_SIZE,
            )
        fixed = pack_fields(self, (("reason_code", 4), ("timeout_seconds", 4), ("flags", 4)))
        return fixed + bytes(self.display_message).ljust(SHUTDOWN_MESSAGE_SIZE, b"\0")

    @classmethod
    def decode(cls, data: bytes) -> Self:
        check_min_length(data, SHUTDOWN_MSG_SIZE, "shutdown body")
        return cls(
            get_uint(data, 0, 4),
            get_uint(data, 4, 4),
            get_uint(data, 8, 4),
            bytes(data[12:SHUTDOWN_MSG_SIZE]).rstrip(b"\0"),
        )


@dataclass(frozen=True)
class TimesyncRefMsg:
    """``ictimesync_ref_data`` (service >= 4.0, 22 bytes)."""

    parenttime: int
    vmreferencetime: int
    flags: int
    leapflags: int = 0
    stratum: int = 0

    def encode(self) -> bytes:
        return pack_fields(self, _TIMESYNC_REF_LAYOUT) + bytes(3)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        check_min_length(data, TIMESYNC_REF_MSG_SIZE, "timesync body")
        return cls(get_uint(data, 0, 8), get_uint(data, 8, 8), data[16], data[17], data[18])


@dataclass(frozen=True)
class TimesyncMsg:
    """``ictimesync_data`` (service < 4.0, 25 bytes)."""

    parenttime: int
    childtime: int
    roundtriptime: int
    flags: int

    def encode(self) -> bytes:
        return pack_fields(self, _TIMESYNC_LAYOUT)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        check_min_length(data, TIMESYNC_MSG_SIZE, "timesync body")
        return cls(get_uint(data, 0, 8), get_uint(data, 8, 8), get_uint(data, 16, 8), data[24])


# Host times are 100-ns units since 1601-01-01 (Windows FILETIME).
FILETIME_UNIX_EPOCH = 116444736000000000


def filetime_to_unix_ns(t: int) -> int:
    return (t - FILETIME_UNIX_EPOCH) * 100


def unix_ns_to_filetime(ns: int) -> int:
    return ns // 100 + FILETIME_UNIX_EPOCH
