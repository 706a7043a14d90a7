"""One direction of a VMBus ring buffer on a writable buffer (protocol.md §5.3, §5.4).

The first 4096 bytes are the header (write_index@0, read_index@4, interrupt_mask@8,
pending_send_sz@12, feature_bits@64); the data area after it is circular. Indices are
byte offsets into the data area. A packet is a 16-byte descriptor, the payload padded to
8, then an 8-byte trailer readers skip. A writer always leaves one byte free so that a
full ring is not mistaken for an empty one.

``RingView`` is the arithmetic both ends share: header fields, wrap-around copies, the
descriptor at an index, appending and consuming a framed packet. It does no I/O and has
no policy: what a malformed ring means (an error, or "wait for more bytes") and when the
other side needs a signal belong to each end (``hvguest.transport.ring`` for the guest,
``hvguest.sim.kernel.ring`` for the simulated host).

Ordering: ``append`` stores the packet bytes before the write index, and callers read
the producer's index before the bytes it covers. CPython performs these as separate
memcpy calls in program order, which x86's TSO memory model keeps ordered.
"""

from __future__ import annotations

import struct

from hvguest.wire.vmbus import (
    FEATURE_BITS_OFFSET,
    INTERRUPT_MASK_OFFSET,
    PACKET_DESCRIPTOR_SIZE,
    PACKET_TRAILER_SIZE,
    PENDING_SEND_SZ_OFFSET,
    READ_INDEX_OFFSET,
    RING_HEADER_SIZE,
    WRITE_INDEX_OFFSET,
    packet_trailer,
)

_U32 = struct.Struct("<I")
_DESC = struct.Struct("<HHHHQ")
MIN_PACKET = PACKET_DESCRIPTOR_SIZE + PACKET_TRAILER_SIZE

# (type, offset8, len8, flags, trans_id) of a vmpacket_descriptor.
Descriptor = tuple[int, int, int, int, int]


class _HeaderField:
    """A little-endian u32 at ``offset`` of a ``RingView``'s header page.

    One descriptor for the five header fields: each read or write is one unpack or
    pack on the shared memory, never a cached copy (the other end changes them).
    """

    def __init__(self, offset: int, *, writable: bool = True) -> None:
        self.offset = offset
        self.writable = writable

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, ring: RingView, owner: type | None = None) -> int:
        value: int = _U32.unpack_from(ring.mem, self.offset)[0]
        return value

    def __set__(self, ring: RingView, value: int) -> None:
        if not self.writable:
            raise AttributeError(f"ring header field {self.name} is read-only")
        _U32.pack_into(ring.mem, self.offset, value)


class RingView:
    """One direction: ``mem`` is exactly the header page plus the data area."""

    def __init__(self, mem: memoryview) -> None:
        self.mem = mem
        self.dsize = len(mem) - RING_HEADER_SIZE
        self._data = mem[RING_HEADER_SIZE:]

    def release(self) -> None:
        """Drop the views (needed before the underlying mmap can be closed)."""
        self._data.release()
        self.mem.release()

    # -- header fields (u32s of the header page, read and written in place) ---------

    write_index = _HeaderField(WRITE_INDEX_OFFSET)
    read_index = _HeaderField(READ_INDEX_OFFSET)
    interrupt_mask = _HeaderField(INTERRUPT_MASK_OFFSET)
    pending_send_sz = _HeaderField(PENDING_SEND_SZ_OFFSET, writable=False)
    feature_bits = _HeaderField(FEATURE_BITS_OFFSET)

    # -- data area -----------------------------------------------------------------

    def used(self, write: int, read: int) -> int:
        """Bytes written and not yet read, for indices already checked against dsize."""
        return (write - read) % self.dsize

    def copy_out(self, start: int, length: int) -> bytes:
        end = start + length
        if end <= self.dsize:
            return bytes(self._data[start:end])
        first = self.dsize - start
        return bytes(self._data[start:]) + bytes(self._data[: length - first])

    def copy_in(self, start: int, data: bytes) -> None:
        end = start + len(data)
        if end <= self.dsize:
            self._data[start:end] = data
            return
        first = self.dsize - start
        self._data[start:] = data[:first]
        self._data[: len(data) - first] = data[first:]

    # -- packets -------------------------------------------------------------------

    def descriptor_at(self, start: int) -> Descriptor:
        """The packet descriptor at data offset ``start``, unchecked."""
        ptype, offset8, len8, flags, trans_id = _DESC.unpack(
            self.copy_out(start, PACKET_DESCRIPTOR_SIZE)
        )
        return ptype, offset8, len8, flags, trans_id

    def append(self, write: int, packet: bytes) -> None:
        """Store ``packet`` (descriptor + payload) and its trailer at ``write``, then
        publish the new write index; the caller has checked that it fits."""
        self.copy_in(write, packet)
        self.copy_in((write + len(packet)) % self.dsize, packet_trailer(write))
        self.write_index = (write + len(packet) + PACKET_TRAILER_SIZE) % self.dsize

    def consume(self, read: int, size: int) -> None:
        """Move the read index past the ``size``-byte packet at ``read`` and its
        trailer; only after the caller has copied the packet out."""
        self.read_index = (read + size + PACKET_TRAILER_SIZE) % self.dsize
