"""RingBuffer on a bytearray: packets, wrap-around, the one-byte-free rule,
malformed descriptors."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvguest.transport.ring import MIN_PACKET, RingBuffer, RingError

HEADER = 4096
DSIZE = 256


def ring(dsize: int = DSIZE) -> tuple[bytearray, RingBuffer]:
    mem = bytearray(HEADER + dsize)
    return mem, RingBuffer(mem, len(mem), name="rx")


def raw_packet(ptype: int, offset8: int, len8: int, trans_id: int, body: bytes) -> bytes:
    return struct.pack("<HHHHQ", ptype, offset8, len8, 0, trans_id) + body


def put(mem: bytearray, r: RingBuffer, at: int, data: bytes) -> None:
    """Place raw bytes at data offset ``at`` (wrapping) and advance write_index."""
    for i, b in enumerate(data):
        mem[HEADER + (at + i) % r.dsize] = b
    r.write_index = (at + len(data)) % r.dsize


def test_header_offsets() -> None:
    mem, r = ring()
    struct.pack_into("<IIII", mem, 0, 8, 16, 1, 100)
    struct.pack_into("<I", mem, 64, 1)
    assert (r.write_index, r.read_index, r.interrupt_mask) == (8, 16, 1)
    assert (r.pending_send_sz, r.feature_bits) == (100, 1)
    r.interrupt_mask = 0
    assert struct.unpack_from("<I", mem, 8)[0] == 0


def test_write_then_read_round_trip_exact_bytes() -> None:
    mem, r = ring()
    assert r.write_packet(b"hello", 0x1122334455667788) is True
    # descriptor: type 6, offset8 2, len8 (16+8)/8 = 3, flags 0, trans_id
    assert mem[HEADER : HEADER + 16] == struct.pack("<HHHHQ", 6, 2, 3, 0, 0x1122334455667788)
    assert mem[HEADER + 16 : HEADER + 24] == b"hello\0\0\0"
    assert mem[HEADER + 24 : HEADER + 32] == struct.pack("<Q", 0 << 32)
    assert r.write_index == 32
    assert r.write_packet(b"x" * 8, 7) is False
    assert mem[HEADER + 32 + 24 : HEADER + 32 + 32] == struct.pack("<Q", 32 << 32)
    got = r.read_packet()
    assert got is not None
    desc, payload = got
    assert (desc.type, desc.offset8, desc.len8, desc.trans_id) == (6, 2, 3, 0x1122334455667788)
    assert payload == b"hello\0\0\0"
    assert r.read_index == 32
    got = r.read_packet()
    assert got is not None and got[1] == b"x" * 8 and got[0].trans_id == 7
    assert r.read_packet() is None
    assert r.available == 0


def test_wrap_around_both_ways() -> None:
    mem, r = ring(128)
    start = 128 - 24  # the packet straddles the end of the data area
    r.write_index = r.read_index = start
    payload = bytes(range(1, 33))
    r.write_packet(payload, 5)
    assert r.write_index == (start + 16 + 32 + 8) % 128
    desc, got = r.read_packet()  # type: ignore[misc]
    assert got == payload and desc.trans_id == 5
    assert r.read_index == r.write_index


def test_host_packet_with_larger_offset8_and_padding() -> None:
    mem, r = ring()
    # offset8 3: 8 bytes of extra header before the payload
    pkt = raw_packet(6, 3, 5, 9, b"\xee" * 8 + b"payload!" + b"pad\0\0\0\0\0")
    put(mem, r, 0, pkt + bytes(8))
    desc, payload = r.read_packet()  # type: ignore[misc]
    assert desc.offset8 == 3 and payload == b"payload!pad\0\0\0\0\0"


def test_one_byte_always_free() -> None:
    mem, r = ring(128)
    # 128-byte data area: a 120-byte packet (16 + 96 + 8) leaves 8 free; ok.
    r.write_packet(bytes(96), 1)
    assert r.free == 8
    mem2, r2 = ring(128)
    # 16 + 104 + 8 = 128 would fill the ring exactly: refused.
    with pytest.raises(RingError) as exc:
        r2.write_packet(bytes(104), 1)
    assert "no room for a 128-byte packet, 128 bytes free" in str(exc.value)
    assert r2.write_index == 0


def test_full_ring_then_drain_makes_room() -> None:
    mem, r = ring(128)
    r.write_packet(bytes(40), 1)  # 64 bytes
    with pytest.raises(RingError):
        r.write_packet(bytes(40), 2)  # would need 64, only 64 free
    assert r.read_packet() is not None
    r.write_packet(bytes(40), 2)


@pytest.mark.parametrize(
    ("desc", "field"),
    [
        (raw_packet(6, 1, 3, 0, bytes(8)), "offset8"),
        (raw_packet(6, 4, 3, 0, bytes(8)), "offset8"),
        (raw_packet(6, 2, 30, 0, bytes(8)), "len8"),
    ],
)
def test_malformed_descriptors(desc: bytes, field: str) -> None:
    mem, r = ring()
    put(mem, r, 0, desc + bytes(8))
    with pytest.raises(RingError) as exc:
        r.read_packet()
    assert exc.value.field == field
    assert r.read_index == 0  # nothing consumed


def test_short_available_and_bad_indices() -> None:
    mem, r = ring()
    r.write_index = 16
    with pytest.raises(RingError, match="less than one packet") as exc:
        r.read_packet()
    assert exc.value.field == "write_index"
    r.write_index = DSIZE + 8
    with pytest.raises(RingError) as exc:
        r.read_packet()
    assert exc.value.field == "write_index"
    r.write_index = 0
    r.read_index = DSIZE
    with pytest.raises(RingError) as exc:
        r.write_packet(b"x", 0)
    assert exc.value.field == "read_index"


def test_bad_sizes() -> None:
    with pytest.raises(ValueError):
        RingBuffer(bytearray(4096), 4096)
    with pytest.raises(ValueError):
        RingBuffer(bytearray(5000), 6000)


def test_min_packet_constant() -> None:
    assert MIN_PACKET == 24


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=DSIZE // 8 - 1),
    payloads=st.lists(st.binary(min_size=0, max_size=60), min_size=1, max_size=12),
)
def test_any_sequence_round_trips(start: int, payloads: list[bytes]) -> None:
    tx_mem, tx = ring()
    tx.write_index = tx.read_index = start * 8
    pending: list[bytes] = []
    for i, p in enumerate(payloads):
        try:
            tx.write_packet(p, i)
            pending.append(p)
        except RingError:
            got = tx.read_packet()
            assert got is not None
            expected = pending.pop(0)
            assert got[1][: len(expected)] == expected
            assert got[1][len(expected) :] == bytes(len(got[1]) - len(expected))
    while pending:
        got = tx.read_packet()
        assert got is not None
        expected = pending.pop(0)
        assert got[1].rstrip(b"\0") == expected.rstrip(b"\0")
    assert tx.read_packet() is None
