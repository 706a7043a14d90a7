"""The host's end of a VMBus ring pair in shared memory (the UIO fcopy channel).

Layout (protocol.md §5.3/§5.4): TX (guest -> host) first, RX (host -> guest) second,
each a 4096-byte header page then a circular data area. The host writes RX and reads
TX; a writer always leaves one byte free; each packet is followed by an 8-byte trailer.
"""

from __future__ import annotations

import struct

from hvguest.wire.vmbus import (
    FEATURE_BITS_OFFSET,
    INTERRUPT_MASK_OFFSET,
    PACKET_DESCRIPTOR_SIZE,
    PACKET_TRAILER_SIZE,
    READ_INDEX_OFFSET,
    RING_HEADER_SIZE,
    WRITE_INDEX_OFFSET,
    build_inband_packet,
    packet_trailer,
)


class RingError(ValueError):
    """The guest left a ring in a state the host cannot parse."""


class Ring:
    """One direction, over a writable buffer (an mmap slice)."""

    def __init__(self, mem: memoryview) -> None:
        self.mem = mem
        self.dsize = len(mem) - RING_HEADER_SIZE

    def _get(self, off: int) -> int:
        return int(struct.unpack_from("<I", self.mem, off)[0])

    def _set(self, off: int, value: int) -> None:
        struct.pack_into("<I", self.mem, off, value & 0xFFFFFFFF)

    @property
    def write_index(self) -> int:
        return self._get(WRITE_INDEX_OFFSET)

    @property
    def read_index(self) -> int:
        return self._get(READ_INDEX_OFFSET)

    @property
    def interrupt_mask(self) -> int:
        return self._get(INTERRUPT_MASK_OFFSET)

    @interrupt_mask.setter
    def interrupt_mask(self, value: int) -> None:
        self._set(INTERRUPT_MASK_OFFSET, value)

    def reset(self) -> None:
        """The header page as the kernel leaves it when it (re)connects the channel."""
        self.mem[:RING_HEADER_SIZE] = bytes(RING_HEADER_SIZE)
        self._set(FEATURE_BITS_OFFSET, 1)

    def available(self) -> int:
        w, r = self.write_index, self.read_index
        if w >= self.dsize or r >= self.dsize:
            raise RingError(f"ring indices out of range: write {w}, read {r}, size {self.dsize}")
        return (w - r) % self.dsize

    def _copy_out(self, start: int, n: int) -> bytes:
        base = RING_HEADER_SIZE
        first = min(n, self.dsize - start)
        out = bytes(self.mem[base + start : base + start + first])
        return out + bytes(self.mem[base : base + n - first])

    def _copy_in(self, start: int, data: bytes) -> None:
        base = RING_HEADER_SIZE
        first = min(len(data), self.dsize - start)
        self.mem[base + start : base + start + first] = data[:first]
        if first < len(data):
            self.mem[base : base + len(data) - first] = data[first:]

    # producer side (host on RX) --------------------------------------------------------
    def write_raw(self, packet: bytes) -> bool:
        """Append ``packet`` (descriptor + payload) and its trailer; False if full."""
        total = len(packet) + PACKET_TRAILER_SIZE
        if self.dsize - self.available() <= total:
            return False
        w = self.write_index
        self._copy_in(w, packet + packet_trailer(w))
        self._set(WRITE_INDEX_OFFSET, (w + total) % self.dsize)
        return True

    def write_packet(self, payload: bytes, trans_id: int) -> bool:
        return self.write_raw(build_inband_packet(payload, trans_id))

    # consumer side (host on TX) --------------------------------------------------------
    def read_packet(self) -> tuple[int, int, bytes] | None:
        """(type, trans_id, payload) of the next packet, or None if none is complete."""
        avail = self.available()
        if avail < PACKET_DESCRIPTOR_SIZE + PACKET_TRAILER_SIZE:
            return None
        r = self.read_index
        ptype, offset8, len8, _flags, trans_id = struct.unpack(
            "<HHHHQ", self._copy_out(r, PACKET_DESCRIPTOR_SIZE)
        )
        size = len8 * 8
        if offset8 < 2 or offset8 > len8:
            raise RingError(f"bad packet descriptor: offset8 {offset8}, len8 {len8}")
        if size + PACKET_TRAILER_SIZE > avail:
            return None
        packet = self._copy_out(r, size)
        self._set(READ_INDEX_OFFSET, (r + size + PACKET_TRAILER_SIZE) % self.dsize)
        return ptype, trans_id, packet[offset8 * 8 :]

    def skip_all(self) -> None:
        self._set(READ_INDEX_OFFSET, self.write_index)
