"""One direction of a VMBus ring buffer in shared memory (protocol.md §5.3, §5.4).

The first 4096 bytes are the header (write_index@0, read_index@4,
interrupt_mask@8, pending_send_sz@12, feature_bits@64); the data area after it
is circular. Indices are byte offsets into the data area. A packet is a 16-byte
descriptor, the payload padded to 8, then an 8-byte trailer readers skip.

Pure: works on any writable buffer (an mmap of /dev/uioN, or a bytearray in
tests). Ordering: the producer stores its index only after the packet bytes and
the consumer reads the producer's index before the bytes. CPython performs
these as separate memcpy calls in program order, which x86's TSO memory model
keeps ordered; the UIO fcopy path is x86-only upstream as well.
"""

from __future__ import annotations

import struct
from typing import Any

from hvguest.errors import TransportError, WireError
from hvguest.wire.vmbus import (
    FEATURE_BITS_OFFSET,
    INTERRUPT_MASK_OFFSET,
    PACKET_DESCRIPTOR_SIZE,
    PACKET_TRAILER_SIZE,
    PENDING_SEND_SZ_OFFSET,
    READ_INDEX_OFFSET,
    RING_HEADER_SIZE,
    WRITE_INDEX_OFFSET,
    VmPacketDescriptor,
    build_inband_packet,
    packet_trailer,
)

_U32 = struct.Struct("<I")
_DESC = struct.Struct("<HHHHQ")
MIN_PACKET = PACKET_DESCRIPTOR_SIZE + PACKET_TRAILER_SIZE


class RingError(TransportError):
    """The ring holds something we cannot accept, or has no room. ``field``
    names the header or descriptor field at fault."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class RingBuffer:
    """One direction: ``mem`` holds the ring (header page + data area) of
    ``size`` bytes."""

    def __init__(self, mem: Any, size: int, *, name: str = "ring") -> None:
        view = memoryview(mem).cast("B")
        if size <= RING_HEADER_SIZE or size % 8:
            raise ValueError(
                f"{name}: ring size {size} must exceed {RING_HEADER_SIZE} and be a multiple of 8"
            )
        if len(view) < size:
            raise ValueError(f"{name}: buffer is {len(view)} bytes, ring needs {size}")
        self.name = name
        self.size = size
        self.dsize = size - RING_HEADER_SIZE
        self._mem = view[:size]
        self._data = self._mem[RING_HEADER_SIZE:]

    def release(self) -> None:
        """Drop the views (needed before the underlying mmap can be closed)."""
        self._data.release()
        self._mem.release()

    # -- header fields -----------------------------------------------------

    def _get(self, offset: int) -> int:
        value: int = _U32.unpack_from(self._mem, offset)[0]
        return value

    def _set(self, offset: int, value: int) -> None:
        _U32.pack_into(self._mem, offset, value)

    @property
    def write_index(self) -> int:
        return self._get(WRITE_INDEX_OFFSET)

    @write_index.setter
    def write_index(self, value: int) -> None:
        self._set(WRITE_INDEX_OFFSET, value)

    @property
    def read_index(self) -> int:
        return self._get(READ_INDEX_OFFSET)

    @read_index.setter
    def read_index(self, value: int) -> None:
        self._set(READ_INDEX_OFFSET, value)

    @property
    def interrupt_mask(self) -> int:
        return self._get(INTERRUPT_MASK_OFFSET)

    @interrupt_mask.setter
    def interrupt_mask(self, value: int) -> None:
        self._set(INTERRUPT_MASK_OFFSET, value)

    @property
    def pending_send_sz(self) -> int:
        return self._get(PENDING_SEND_SZ_OFFSET)

    @property
    def feature_bits(self) -> int:
        return self._get(FEATURE_BITS_OFFSET)

    def _indices(self) -> tuple[int, int]:
        w = self.write_index  # the producer's index first, then the data
        r = self.read_index
        for value, field in ((w, "write_index"), (r, "read_index")):
            if value >= self.dsize:
                raise RingError(
                    f"{self.name}: {field} is {value}, beyond the {self.dsize}-byte data area",
                    field=field,
                )
        return w, r

    @property
    def available(self) -> int:
        """Bytes written and not yet read."""
        w, r = self._indices()
        return (w - r) % self.dsize

    @property
    def free(self) -> int:
        return self.dsize - self.available

    # -- data area ---------------------------------------------------------

    def _copy_out(self, start: int, length: int) -> bytes:
        end = start + length
        if end <= self.dsize:
            return bytes(self._data[start:end])
        first = self.dsize - start
        return bytes(self._data[start:]) + bytes(self._data[: length - first])

    def _copy_in(self, start: int, data: bytes) -> None:
        end = start + len(data)
        if end <= self.dsize:
            self._data[start:end] = data
            return
        first = self.dsize - start
        self._data[start:] = data[:first]
        self._data[: len(data) - first] = data[first:]

    # -- packets -------------------------------------------------------------

    def read_packet(self) -> tuple[VmPacketDescriptor, bytes] | None:
        """Take the next packet: its descriptor and payload (padding included),
        or None when the ring is empty. The read index moves only after the
        copy, so the producer cannot overwrite what we are reading."""
        w, r = self._indices()
        available = (w - r) % self.dsize
        if available == 0:
            return None
        if available < MIN_PACKET:
            raise RingError(
                f"{self.name}: {available} bytes available, less than one packet ({MIN_PACKET})",
                field="write_index",
            )
        ptype, offset8, len8, flags, trans_id = _DESC.unpack(
            self._copy_out(r, PACKET_DESCRIPTOR_SIZE)
        )
        if offset8 < PACKET_DESCRIPTOR_SIZE // 8:
            raise RingError(
                f"{self.name}: packet offset8 is {offset8}, minimum {PACKET_DESCRIPTOR_SIZE // 8}",
                field="offset8",
            )
        if offset8 > len8:
            raise RingError(
                f"{self.name}: packet offset8 is {offset8}, beyond len8 {len8}", field="offset8"
            )
        size = len8 * 8
        if size + PACKET_TRAILER_SIZE > available:
            raise RingError(
                f"{self.name}: packet len8 {len8} ({size} bytes + {PACKET_TRAILER_SIZE} trailer)"
                f" exceeds the {available} bytes available",
                field="len8",
            )
        packet = self._copy_out(r, size)
        self.read_index = (r + size + PACKET_TRAILER_SIZE) % self.dsize
        desc = VmPacketDescriptor(ptype, offset8, len8, flags, trans_id)
        return desc, packet[offset8 * 8 :]

    def write_packet(self, payload: bytes, trans_id: int, *, flags: int = 0) -> bool:
        """Append one in-band packet (type 6, offset8 2); returns whether the
        ring was empty before (the host then needs a signal). Raises RingError
        when there is not enough room: one byte always stays free so that a
        full ring is not mistaken for an empty one."""
        try:
            packet = build_inband_packet(payload, trans_id, flags=flags)
        except WireError as exc:
            raise RingError(f"{self.name}: {exc}", field="len8") from exc
        total = len(packet) + PACKET_TRAILER_SIZE
        w, r = self._indices()
        free = self.dsize - (w - r) % self.dsize
        if free <= total:
            raise RingError(
                f"{self.name}: no room for a {total}-byte packet, {free} bytes free"
                f" (of {self.dsize})",
                field="read_index",
            )
        self._copy_in(w, packet)
        self._copy_in((w + len(packet)) % self.dsize, packet_trailer(w))
        self.write_index = (w + total) % self.dsize  # publish only after the bytes
        return w == r
