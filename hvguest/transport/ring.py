"""The guest's end of one VMBus ring direction in shared memory (protocol.md §5.3, §5.4).

``hvguest.wire.ring.RingView`` does the index arithmetic, the wrap-around copies and
the packet framing; this adds the guest's policy: every index and descriptor the host
left is checked, and anything malformed or a full ring is a ``RingError``.

Works on any writable buffer (an mmap of /dev/uioN, or a bytearray in tests). The UIO
fcopy path is x86-only upstream, which the ordering argument in ``hvguest.wire.ring``
relies on.
"""

from __future__ import annotations

import mmap
import struct

from hvguest.errors import TransportError, WireError
from hvguest.wire.icmsg import mark_response
from hvguest.wire.ring import MIN_PACKET, RingView
from hvguest.wire.vmbus import (
    PACKET_DESCRIPTOR_SIZE,
    PACKET_TRAILER_SIZE,
    READ_INDEX_OFFSET,
    RING_HEADER_SIZE,
    VM_PKT_DATA_INBAND,
    WRITE_INDEX_OFFSET,
    VmPacketDescriptor,
    build_inband_packet,
)

_DESC = struct.Struct("<HHHHQ")
_TRAILER = struct.Struct("<Q")
# write_index@0 and read_index@4, adjacent: one read of both, the producer's first.
_INDICES = struct.Struct("<II")
_U32 = struct.Struct("<I")
assert (WRITE_INDEX_OFFSET, READ_INDEX_OFFSET) == (0, 4)
# (type, trans_id, payload, read index after the packet) of the packet at the read index.
Packet = tuple[int, int, memoryview, int]

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

    def __init__(
        self, mem: memoryview | bytearray | mmap.mmap, size: int, *, name: str = "ring"
    ) -> None:
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
        """(write_index, read_index), both checked against the data area; read
        before the data they cover (on every packet: one unpack for both)."""
        w, r = _INDICES.unpack_from(self.mem)
        dsize = self.dsize
        if w >= dsize or r >= dsize:
            field, value = ("write_index", w) if w >= dsize else ("read_index", r)
            raise RingError(
                f"{self.name}: {field} is {value}, beyond the {dsize}-byte data area",
                field=field,
            )
        return w, r

    def read_to(self, after: int) -> None:
        """Move read_index to ``after`` (the ``peek_packet`` result): the producer
        may reuse those bytes from now on."""
        _U32.pack_into(self.mem, READ_INDEX_OFFSET, after)

    @property
    def available(self) -> int:
        """Bytes written and not yet read."""
        return self.used(*self._indices())

    @property
    def free(self) -> int:
        return self.dsize - self.available

    # -- packets -------------------------------------------------------------

    def peek_packet(self, w: int, r: int) -> Packet:
        """The packet at read index ``r`` (``w`` != ``r``, both checked by
        ``_indices``), without copying it: the payload (padding included) is a view
        of the ring, valid until ``read_index`` moves past it; only a packet that
        wraps around the end is copied. Checks what ``read_packet`` checks."""
        available = self.used(w, r)
        if available < MIN_PACKET:
            raise RingError(
                f"{self.name}: {available} bytes available, less than one packet ({MIN_PACKET})",
                field="write_index",
            )
        dsize = self.dsize
        if r + PACKET_DESCRIPTOR_SIZE <= dsize:
            ptype, offset8, len8, _flags, trans_id = _DESC.unpack_from(self._data, r)
        else:
            ptype, offset8, len8, _flags, trans_id = self.descriptor_at(r)
        if offset8 < PACKET_DESCRIPTOR_SIZE // 8 or offset8 > len8:
            limit = "minimum 2" if offset8 < PACKET_DESCRIPTOR_SIZE // 8 else f"beyond len8 {len8}"
            raise RingError(f"{self.name}: packet offset8 is {offset8}, {limit}", field="offset8")
        size = len8 * 8
        if size + PACKET_TRAILER_SIZE > available:
            raise RingError(
                f"{self.name}: packet len8 {len8} ({size} bytes + {PACKET_TRAILER_SIZE} trailer)"
                f" exceeds the {available} bytes available",
                field="len8",
            )
        end = r + size
        if end <= dsize:
            payload = self._data[r + offset8 * 8 : end]
        else:
            payload = memoryview(self.copy_out(r, size))[offset8 * 8 :]
        return ptype, trans_id, payload, (end + PACKET_TRAILER_SIZE) % dsize

    def write_response(self, request: memoryview, trans_id: int, status: int) -> None:
        """Append the IC response to ``request`` (an in-band payload, a multiple of 8
        bytes long): the request's bytes with ``status`` and the response flags
        (``hvguest.wire.icmsg.mark_response``), copied straight into the ring."""
        length = PACKET_DESCRIPTOR_SIZE + len(request)
        w, r = self._indices()
        if len(request) % 8 or length + PACKET_TRAILER_SIZE > self.dsize - self.used(w, r) - 1:
            out = bytearray(request)
            mark_response(out, status)
            self.write_packet(bytes(out), trans_id)  # wraps, or the refusal with its reason
            return
        if w + length + PACKET_TRAILER_SIZE > self.dsize:
            # It wraps around the end: framed in one buffer, copied in two pieces.
            out = bytearray(length)
            _DESC.pack_into(out, 0, VM_PKT_DATA_INBAND, PACKET_DESCRIPTOR_SIZE // 8,
                            length // 8, 0, trans_id)
            body = memoryview(out)[PACKET_DESCRIPTOR_SIZE:]
            body[:] = request
            mark_response(body, status)
            self.copy_in(w, bytes(out))
            self.copy_in((w + length) % self.dsize, _TRAILER.pack(w << 32))
        else:
            data = self._data
            _DESC.pack_into(data, w, VM_PKT_DATA_INBAND, PACKET_DESCRIPTOR_SIZE // 8,
                            length // 8, 0, trans_id)
            body = data[w + PACKET_DESCRIPTOR_SIZE : w + length]
            body[:] = request
            mark_response(body, status)
            _TRAILER.pack_into(data, w + length, w << 32)
        after = (w + length + PACKET_TRAILER_SIZE) % self.dsize
        _U32.pack_into(self.mem, WRITE_INDEX_OFFSET, after)

    def read_packet(self) -> tuple[VmPacketDescriptor, bytes] | None:
        """Take the next packet: its descriptor and payload (padding included),
        or None when the ring is empty. The read index moves only after the
        copy, so the producer cannot overwrite what we are reading."""
        w, r = self._indices()
        if w == r:
            return None
        _, _, payload, after = self.peek_packet(w, r)
        desc = VmPacketDescriptor(*self.descriptor_at(r))
        packet = bytes(payload)
        self.read_index = after
        return desc, packet

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
