"""Helpers for golden tables: build expected bytes from (offset, bytes) pairs."""

from __future__ import annotations

import struct


def u8(v: int) -> bytes:
    return struct.pack("<B", v)


def u16(v: int) -> bytes:
    return struct.pack("<H", v)


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def z8(text: str) -> bytes:
    """NUL-terminated UTF-8."""
    return text.encode() + b"\0"


def z16(text: str) -> bytes:
    """UTF-16LE with a 0 code unit."""
    return text.encode("utf-16-le") + b"\0\0"


def layout(size: int, fields: dict[int, bytes]) -> bytes:
    """``size`` zero bytes with each ``fields`` entry stored at its offset."""
    buf = bytearray(size)
    for offset, data in fields.items():
        assert offset + len(data) <= size, (offset, len(data), size)
        buf[offset : offset + len(data)] = data
    return bytes(buf)


def assert_fields(encoded: bytes, size: int, fields: dict[int, bytes]) -> None:
    """Each field is at its documented offset, and every other byte is zero."""
    assert len(encoded) == size
    covered = bytearray(size)
    for offset, data in fields.items():
        assert encoded[offset : offset + len(data)] == data, f"field at offset {offset}"
        covered[offset : offset + len(data)] = b"\1" * len(data)
    stray = [i for i in range(size) if not covered[i] and encoded[i] != 0]
    assert not stray, f"non-zero bytes outside the documented fields at {stray[:8]}"
