"""Fuzz targets for the ring: RingView's arithmetic and the guest's RingBuffer checks.

Random ring states: a small data area (so that packets wrap), random header indices
(in range or not) and random bytes, or packets a well-behaved host appended, then
mutated or not. The guest reader may only return packets or raise ``RingError``; the
constructor only ``ValueError`` for a bad size. What a correct host wrote must come
out exactly, and what the guest writes must be framed exactly.
"""

from __future__ import annotations

from hvguest.transport.ring import RingBuffer, RingError
from hvguest.wire.ring import RingView
from hvguest.wire.vmbus import (
    PACKET_TRAILER_SIZE,
    RING_HEADER_SIZE,
    VmPacketDescriptor,
    build_inband_packet,
)

from .harness import Draw, Target, random_seeds


def _construct(d: Draw) -> bool:
    """RingBuffer's size checks: ValueError exactly when size or buffer is wrong."""
    size = d.uint(2) % (RING_HEADER_SIZE + 256)
    size += RING_HEADER_SIZE if d.flag() else 0
    buffer = bytearray(max(0, size + d.below(16) - 8))
    valid = size > RING_HEADER_SIZE and size % 8 == 0 and len(buffer) >= size
    try:
        ring = RingBuffer(buffer, size)
    except ValueError as exc:
        assert not valid, f"RingBuffer refused a valid size {size}: {exc}"
        return False
    assert valid, f"RingBuffer accepted size {size} over {len(buffer)} bytes"
    assert ring.dsize == size - RING_HEADER_SIZE
    return True


def _view_arithmetic(d: Draw, view: RingView) -> None:
    """copy_out/copy_in wrap exactly like a doubled buffer would."""
    start, length = d.below(view.dsize), d.below(view.dsize + 1)
    data = bytes(view._data)
    assert view.copy_out(start, length) == (data + data)[start : start + length]
    chunk = d.raw(length).ljust(length, b"\xa5")
    view.copy_in(start, chunk)
    assert view.copy_out(start, length) == chunk
    assert 0 <= view.used(d.below(view.dsize), d.below(view.dsize)) < view.dsize


def _host_appends(d: Draw, view: RingView) -> list[tuple[int, bytes]]:
    """A correct host: packets appended while they fit, leaving a byte free."""
    start = d.below(view.dsize) & ~7
    view.write_index = view.read_index = start
    sent = []
    for _ in range(d.below(6)):
        payload, trans_id = d.blob(64), d.uint(8)
        packet = build_inband_packet(payload, trans_id)
        used = view.used(view.write_index, view.read_index)
        if view.dsize - used <= len(packet) + PACKET_TRAILER_SIZE:
            break
        view.append(view.write_index, packet)
        sent.append((trans_id, payload))
    return sent


def _read_one(ring: RingBuffer) -> tuple[VmPacketDescriptor, bytes] | None:
    before = ring.read_index
    got = ring.read_packet()
    assert ring.read_index < ring.dsize, f"read_index {ring.read_index} out of the ring"
    if got is None:
        assert ring.read_index == before
        return None
    desc, payload = got
    assert len(payload) == (desc.len8 - desc.offset8) * 8, "payload length vs descriptor"
    moved = (ring.read_index - before) % ring.dsize
    assert moved == desc.len8 * 8 + PACKET_TRAILER_SIZE, f"read index moved {moved} bytes"
    return got


def _write_one(d: Draw, ring: RingBuffer) -> None:
    payload, trans_id = d.blob(600), d.uint(8)
    w, free = ring.write_index, ring.free
    was_empty = ring.available == 0
    assert ring.write_packet(payload, trans_id) == was_empty, "signal flag vs empty ring"
    packet = build_inband_packet(payload, trans_id)
    assert len(packet) + PACKET_TRAILER_SIZE < free, "write_packet used the last free byte"
    assert ring.copy_out(w, len(packet)) == packet, "written packet differs"


def ring_target(data: bytes) -> bool:
    d = Draw(data)
    if d.below(8) == 0:
        return _construct(d)
    dsize = 8 * (1 + d.below(96))
    ring = RingBuffer(bytearray(RING_HEADER_SIZE + dsize), RING_HEADER_SIZE + dsize)
    mode = d.below(4)
    sent: list[tuple[int, bytes]] = []
    if mode == 0:
        _view_arithmetic(d, ring)
        return True
    ring.copy_in(0, d.raw(dsize).ljust(dsize, b"\0"))
    if mode == 1:  # random header indices, in the data area or anywhere
        for field in ("write_index", "read_index"):
            value = d.uint(4)
            setattr(ring, field, value if d.flag() else value % dsize)
    else:
        sent = _host_appends(d, ring)
        if mode == 3:  # then a hostile host flips bytes
            for _ in range(1 + d.below(4)):
                ring.copy_in(d.below(dsize), d.raw(1) or b"\xff")
            sent = []
    accepted = False
    try:
        for _ in range(8):
            if d.flag() and d.left():
                try:
                    _write_one(d, ring)
                except RingError as exc:  # no room, or a bad index: refused, ring intact
                    assert exc.field and str(exc), "RingError without field or message"
                continue
            got = _read_one(ring)
            if got is None:
                break
            accepted = True
            if sent:
                trans_id, payload = sent.pop(0)
                desc, body = got
                assert desc.trans_id == trans_id and body[: len(payload)] == payload, (
                    "a correct host's packet did not come out as sent"
                )
    except RingError as exc:
        assert exc.field and str(exc), "RingError without field or message"
        assert not sent or mode != 2, f"RingError on a correct host's packets: {exc}"
        return False
    return accepted


RING_TARGETS = [Target("ring", ring_target, random_seeds(32, 1500))]
