"""The guest's end of one VMBus ring direction in shared memory (protocol.md §5.3, §5.4).

``hvguest.wire.ring.RingView`` does the index arithmetic, the wrap-around copies and
the packet framing; this adds the guest's policy: every index and descriptor the host
left is checked, and anything malformed or a full ring is a ``RingError``.

Works on any writable buffer (an mmap of /dev/uioN, or a bytearray in tests). The UIO
fcopy path is x86-only upstream, which the ordering argument in ``hvguest.wire.ring``
relies on.
"""

from __future__ import annotations

from typing import Any

from hvguest.errors import TransportError, WireError
from hvguest.wire.ring import MIN_PACKET, RingView
from hvguest.wire.vmbus import (
    PACKET_DESCRIPTOR_SIZE,
    PACKET_TRAILER_SIZE,
    RING_HEADER_SIZE,
    VmPacketDescriptor,
    build_inband_packet,
)

__all__ = ["MIN_PACKET", "RingBuffer", "RingError"]


class RingError(TransportError):
    """The ring holds something we cannot accept, or has no room. ``field``
    names the header or descriptor field at fault."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class RingBuffer(RingView):
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
        super().__init__(view[:size])
        self.name = name
        self.size = size

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
        return self.used(*self._indices())

    @property
    def free(self) -> int:
        return self.dsize - self.available

    # -- packets -------------------------------------------------------------

    def read_packet(self) -> tuple[VmPacketDescriptor, bytes] | None:
        """Take the next packet: its descriptor and payload (padding included),
        or None when the ring is empty. The read index moves only after the
        copy, so the producer cannot overwrite what we are reading."""
        w, r = self._indices()
        available = self.used(w, r)
        if available == 0:
            return None
        if available < MIN_PACKET:
            raise RingError(
                f"{self.name}: {available} bytes available, less than one packet ({MIN_PACKET})",
                field="write_index",
            )
        ptype, offset8, len8, flags, trans_id = self.descriptor_at(r)
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
        packet = self.copy_out(r, size)
        self.consume(r, size)
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
        free = self.dsize - self.used(w, r)
        if free <= total:
            raise RingError(
                f"{self.name}: no room for a {total}-byte packet, {free} bytes free"
                f" (of {self.dsize})",
                field="read_index",
            )
        self.append(w, packet)
        return w == r
