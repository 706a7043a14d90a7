"""KVP pool-file records: ``/var/lib/hyperv/.kvp_pool_N`` (protocol.md §2.4).

A pool file is a plain concatenation of 2560-byte records, ``key[512]`` then
``value[2048]``, each NUL-terminated UTF-8. Other writers (the C daemon, cloud-init,
azure-init, hand edits) may leave stale bytes after the NUL or even invalid UTF-8, so a
record keeps the raw NUL-cut bytes and decodes text only on request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from hvguest.errors import WireError
from hvguest.wire._codec import check_length, cut_nul, utf8_bytes, utf8_text

POOL_KEY_SIZE = 512
POOL_VALUE_SIZE = 2048
POOL_RECORD_SIZE = POOL_KEY_SIZE + POOL_VALUE_SIZE
POOL_COUNT = 5


@dataclass(frozen=True)
class PoolRecord:
    """One record: key and value as raw bytes, without the NUL and what follows it."""

    key: bytes
    value: bytes

    @classmethod
    def from_text(cls, key: str, value: str) -> Self:
        """A record from text; WireError if it cannot be stored NUL-terminated."""
        return cls(
            utf8_bytes(key, "key", POOL_KEY_SIZE - 1),
            utf8_bytes(value, "value", POOL_VALUE_SIZE - 1),
        )

    def key_text(self) -> str:
        return utf8_text(self.key, "key")

    def value_text(self) -> str:
        return utf8_text(self.value, "value")

    def encode(self) -> bytes:
        """2560 bytes, zero-filled after each NUL."""
        for name, raw, size in (
            ("key", self.key, POOL_KEY_SIZE),
            ("value", self.value, POOL_VALUE_SIZE),
        ):
            if b"\0" in raw:
                raise WireError(f"pool record {name} contains a NUL byte", field=name)
            if len(raw) >= size:
                raise WireError(
                    f"pool record {name} is {len(raw)} bytes, limit {size - 1} plus the NUL",
                    field=name,
                    limit=size - 1,
                )
        return self.key.ljust(POOL_KEY_SIZE, b"\0") + self.value.ljust(POOL_VALUE_SIZE, b"\0")

    @classmethod
    def decode(cls, buf: bytes) -> Self:
        """One record of exactly 2560 bytes; each field is cut at its first NUL.

        A field without NUL is taken whole (the C daemon would read past it; we do not).
        """
        check_length(buf, POOL_RECORD_SIZE, "pool record")
        return cls(cut_nul(bytes(buf[:POOL_KEY_SIZE])), cut_nul(bytes(buf[POOL_KEY_SIZE:])))


def decode_pool(data: bytes) -> tuple[list[PoolRecord], int]:
    """All whole records of a pool file, and the number of trailing bytes ignored."""
    count = len(data) // POOL_RECORD_SIZE
    records = [
        PoolRecord.decode(data[i * POOL_RECORD_SIZE : (i + 1) * POOL_RECORD_SIZE])
        for i in range(count)
    ]
    return records, len(data) - count * POOL_RECORD_SIZE


def encode_pool(records: list[PoolRecord]) -> bytes:
    """The bytes of a pool file holding ``records`` in order."""
    return b"".join(record.encode() for record in records)
