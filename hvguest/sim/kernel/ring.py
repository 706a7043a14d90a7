"""The host's end of a VMBus ring pair in shared memory (the UIO fcopy channel).

Layout (protocol.md §5.3/§5.4): TX (guest -> host) first, RX (host -> guest) second.
The host writes RX and reads TX. ``hvguest.wire.ring.RingView`` does the arithmetic;
this adds the host's policy: a full ring or a packet not yet complete is not an error
(the caller retries later), only indices or a descriptor it cannot parse are.
"""

from __future__ import annotations

from hvguest.wire.ring import MIN_PACKET, RingView
from hvguest.wire.vmbus import (
    PACKET_TRAILER_SIZE,
    RING_HEADER_SIZE,
    build_inband_packet,
)


class RingError(ValueError):
    """The guest left a ring in a state the host cannot parse."""


class Ring(RingView):
    """One direction, over a writable buffer (an mmap slice)."""

    def reset(self) -> None:
        """The header page as the kernel leaves it when it (re)connects the channel."""
        self.mem[:RING_HEADER_SIZE] = bytes(RING_HEADER_SIZE)
        self.feature_bits = 1

    def available(self) -> int:
        w, r = self.write_index, self.read_index
        if w >= self.dsize or r >= self.dsize:
            raise RingError(f"ring indices out of range: write {w}, read {r}, size {self.dsize}")
        return self.used(w, r)

    # producer side (host on RX) --------------------------------------------------------
    def write_raw(self, packet: bytes) -> bool:
        """Append ``packet`` (descriptor + payload) and its trailer; False if full."""
        total = len(packet) + PACKET_TRAILER_SIZE
        if self.dsize - self.available() <= total:
            return False
        self.append(self.write_index, packet)
        return True

    def write_packet(self, payload: bytes, trans_id: int) -> bool:
        return self.write_raw(build_inband_packet(payload, trans_id))

    # consumer side (host on TX) --------------------------------------------------------
    def read_packet(self) -> tuple[int, int, bytes] | None:
        """(type, trans_id, payload) of the next packet, or None if none is complete."""
        avail = self.available()
        if avail < MIN_PACKET:
            return None
        r = self.read_index
        ptype, offset8, len8, _flags, trans_id = self.descriptor_at(r)
        size = len8 * 8
        if offset8 < 2 or offset8 > len8:
            raise RingError(f"bad packet descriptor: offset8 {offset8}, len8 {len8}")
        if size + PACKET_TRAILER_SIZE > avail:
            return None
        packet = self.copy_out(r, size)
        self.consume(r, size)
        return ptype, trans_id, packet[offset8 * 8 :]

    def skip_all(self) -> None:
        self.read_index = self.write_index
