"""RingChannel on rings in memory: drain() answers from the ring, re-arms once per
batch, discard_corrupt() and abandonment decide what a malformed ring costs."""

from __future__ import annotations

import struct

import pytest

from hvguest.transport.ring import RingBuffer
from hvguest.transport.uio_ring import CorruptPacket, RingAbandoned, RingChannel
from hvguest.wire.icmsg import ICMSG_RESPONSE_FLAGS, IcHeader, ic_response
from hvguest.wire.vmbus import RING_HEADER_SIZE, build_inband_packet, packet_trailer

RING = 0x3000


class Rings:
    def __init__(self) -> None:
        self.mem = bytearray(2 * RING)
        view = memoryview(self.mem)
        self.tx = RingBuffer(view[:RING], RING, name="TX")
        self.rx = RingBuffer(view[RING:], RING, name="RX")
        self.signals = 0
        self.channel = RingChannel(self.tx, self.rx, self.signal)
        self.on_signal = lambda: None

    def signal(self) -> None:
        self.signals += 1
        self.on_signal()

    def send_raw(self, packet: bytes) -> None:
        w = self.rx.write_index
        start = RING + RING_HEADER_SIZE + w
        self.mem[start : start + len(packet)] = packet
        self.mem[start + len(packet) : start + len(packet) + 8] = packet_trailer(w)
        self.rx.write_index = w + len(packet) + 8

    def replies(self) -> list[tuple[int, bytes]]:
        out = []
        while (got := self.tx.read_packet()) is not None:
            out.append((got[0].trans_id, got[1]))
        return out


def request(tag: int, size: int = 40) -> bytes:
    return bytes([tag]) * size


def test_drain_answers_every_packet_from_the_ring_and_signals_once() -> None:
    r = Rings()
    seen: list[bytes] = []
    for tid in (1, 2, 3):
        r.rx.write_packet(request(tid), tid)

    def handler(payload: memoryview) -> bytes | int | None:
        seen.append(bytes(payload))
        tag = payload[0]
        return {1: 0x80004005, 2: b"own reply", 3: None}[tag]

    assert r.channel.drain(handler) == 2
    assert seen == [request(1), request(2), request(3)]
    assert r.signals == 1  # one re-arm (and host signal) for the batch
    replies = r.replies()
    assert [tid for tid, _ in replies] == [1, 2]
    # A status answer is the request echoed as its IC response, byte for byte.
    assert replies[0][1] == ic_response(request(1), 0x80004005)
    assert IcHeader.decode(replies[0][1]).flags == ICMSG_RESPONSE_FLAGS
    assert replies[1][1] == b"own reply" + bytes(7)
    assert r.rx.available == 0


def test_drain_goes_again_for_packets_queued_while_masked() -> None:
    r = Rings()
    r.rx.write_packet(request(1), 1)

    def late() -> None:
        if r.signals == 1:
            r.rx.write_packet(request(2), 2)

    r.on_signal = late
    assert r.channel.drain(lambda p: 0) == 2
    assert r.signals == 2 and [t for t, _ in r.replies()] == [1, 2]


def test_packets_that_wrap_are_served_and_answered() -> None:
    r = Rings()
    dsize = RING - RING_HEADER_SIZE
    start = dsize - 24  # descriptor fits, the payload wraps
    for ring in (r.rx, r.tx):
        ring.write_index = ring.read_index = start
    r.rx.write_packet(request(7, 64), 9)
    got: list[bytes] = []
    assert r.channel.drain(lambda p: got.append(bytes(p)) or 0) == 1
    assert got == [request(7, 64)]
    [(tid, payload)] = r.replies()
    assert tid == 9 and payload == ic_response(request(7, 64), 0)


def test_corrupt_packet_then_discard_corrupt_and_serve_on() -> None:
    r = Rings()
    bad = bytearray(build_inband_packet(request(1), 5))
    struct.pack_into("<H", bad, 2, 1)  # offset8 inside the descriptor
    r.send_raw(bytes(bad))
    r.rx.write_packet(request(2), 6)  # queued behind it: dropped as well
    with pytest.raises(CorruptPacket, match="offset8 is 1"):
        r.channel.drain(lambda p: 0)
    assert r.channel.discard_corrupt() == 2 * (16 + 40 + 8)
    assert r.rx.available == 0
    r.rx.write_packet(request(3), 7)
    assert r.channel.drain(lambda p: 0) == 1
    assert [t for t, _ in r.replies()] == [7]


@pytest.mark.parametrize("field", ["read_index", "write_index"])
def test_index_out_of_range_abandons_the_ring(field: str) -> None:
    r = Rings()
    setattr(r.rx, field, RING)  # beyond the data area
    with pytest.raises(RingAbandoned, match="abandoning the ring: RX read_index"):
        r.channel.drain(lambda p: 0)
    with pytest.raises(RingAbandoned):
        r.channel.discard_corrupt()


def test_full_tx_abandons_the_ring() -> None:
    r = Rings()
    dsize = RING - RING_HEADER_SIZE
    r.tx.write_index = 0
    r.tx.read_index = 64  # the host consumed nothing: 63 bytes free
    assert r.tx.free < dsize
    r.rx.write_packet(request(1), 1)
    with pytest.raises(RingAbandoned, match="TX"):
        r.channel.drain(lambda p: 0)


def test_errors_keep_no_view_of_the_ring_alive() -> None:
    """A drain that fails must not leave views of the ring behind (in the error's
    traceback): the mapping could not be closed, so the channel never got fresh
    rings after an abandoned one."""
    import mmap

    m = mmap.mmap(-1, 2 * RING)
    view = memoryview(m)
    tx = RingBuffer(view[:RING], RING, name="TX")
    rx = RingBuffer(view[RING:], RING, name="RX")
    view.release()

    def corrupt_while_masked() -> None:
        rx.read_index = RING  # the host breaks the ring before the re-arm check

    channel = RingChannel(tx, rx, corrupt_while_masked)
    rx.write_packet(request(1), 1)
    with pytest.raises(RingAbandoned) as caught:
        channel.drain(lambda p: 0)
    assert caught.value.__traceback__ is not None
    tx.release()
    rx.release()
    m.close()  # BufferError while a payload view survives


def test_after_reply_runs_once_the_host_is_signalled_and_the_packet_consumed() -> None:
    r = Rings()
    r.rx.write_packet(request(1), 1)
    r.rx.write_packet(request(2), 2)
    seen: list[tuple[int, int, int]] = []

    def after() -> None:  # (signals so far, bytes still queued, replies visible)
        seen.append((r.signals, r.rx.available, len(r.tx.read_packet() or ())))

    assert r.channel.drain(lambda p: 0, after) == 2
    # Signalled for each reply before its after-work; the packet was consumed first.
    assert seen == [(1, 16 + 40 + 8, 2), (2, 0, 2)]
    assert r.signals == 2  # no extra re-arm: the last reply's signal re-armed


def test_a_handler_bug_fails_that_packet_and_the_ring_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug while serving one packet must not leave it at the head of RX, where
    every later interrupt would serve it again and the host would never get an
    answer; the packet is answered HV_E_FAIL, consumed, and the next is served.
    Nothing of the failure may keep a view of the ring alive (not even a log
    record that a handler such as caplog holds on to): the mapping must close."""
    import mmap

    m = mmap.mmap(-1, 2 * RING)
    view = memoryview(m)
    tx = RingBuffer(view[:RING], RING, name="TX")
    rx = RingBuffer(view[RING:], RING, name="RX")
    view.release()
    channel = RingChannel(tx, rx, lambda: None)
    rx.write_packet(request(1), 7)
    rx.write_packet(request(2), 8)

    def handler(payload: memoryview) -> int:
        if payload[0] == 1:
            raise ValueError("a bug in serving one packet")
        return 0

    assert channel.drain(handler) == 2
    assert rx.available == 0
    replies = []
    while (got := tx.read_packet()) is not None:
        replies.append((got[0].trans_id, IcHeader.decode(got[1]).status))
    assert replies == [(7, 0x80004005), (8, 0)]
    assert "a bug in serving one packet" in caplog.text
    tx.release()
    rx.release()
    m.close()  # BufferError while a payload view survives
