"""What a fuzz target is, and the helpers targets share.

A target is a function of one byte string. It returns ``True`` when the input was
accepted (decoded, served) and ``False`` when it was refused the documented way (a
``WireError`` with ``field`` set, a ``RingError``, a failure reply). Anything else it
lets escape, an ``AssertionError`` from a broken property included, is a failure.

Targets are plain functions of bytes so that a reproducer is just the input in hex:
``scripts/fuzz --target NAME --repro HEX`` replays it without the fuzzing engine.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from hvguest.errors import WireError

TargetFn = Callable[[bytes], bool]


@dataclass(frozen=True)
class Target:
    name: str
    fn: TargetFn
    seeds: tuple[bytes, ...] = ()
    max_len: int = 8300
    # Selftest targets prove the harness catches a failure; "all" skips them.
    selftest: bool = False
    # At least one accepted input is expected in a run of a few thousand cases;
    # a target that never gets past its first check fuzzes nothing.
    must_accept: bool = True
    tags: tuple[str, ...] = field(default=())


def wire_error_ok(exc: WireError) -> None:
    """A decoder's refusal must say which field and which limit (conventions)."""
    assert exc.field, f"WireError without field: {exc}"
    assert str(exc), "WireError without a message"


def fit(data: bytes, *sizes: int) -> bytes:
    """Shape the input: a first byte below 0x80 passes the rest as is; otherwise the
    rest is zero-padded or cut to one of ``sizes``, so that mutations keep hitting the
    exact lengths the fixed-size decoders want."""
    if not data:
        return b""
    mode, rest = data[0], data[1:]
    if mode < 0x80 or not sizes:
        return rest
    size = sizes[mode % len(sizes)]
    return rest[:size].ljust(size, b"\0")


def take_u32(data: bytes) -> tuple[int, bytes]:
    """A u32 parameter from the first four bytes (zero-padded), and the rest."""
    head = data[:4].ljust(4, b"\0")
    value: int = struct.unpack("<I", head)[0]
    return value, data[4:]


def random_seeds(count: int, size: int) -> tuple[bytes, ...]:
    """Fixed pseudo-random inputs: starting points for the sequence-driven targets,
    whose interesting states need more bytes than libFuzzer grows from nothing."""
    return tuple(random.Random(i).randbytes(size) for i in range(count))


def raw_seed(message: bytes) -> bytes:
    """A seed for ``fit``-shaped targets: mode byte 0 (as is) then the message."""
    return b"\0" + message


class Draw:
    """Structured values drawn from the fuzz input, front to back; zeros once it runs
    out, so that every input is a valid (if short) program."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + max(n, 0)]
        self.pos += len(out)
        return out

    def uint(self, size: int) -> int:
        return int.from_bytes(self.raw(size).ljust(size, b"\0"), "little")

    def below(self, n: int) -> int:
        """0 <= value < n."""
        return self.uint(1 if n <= 256 else 4) % n

    def flag(self) -> bool:
        return bool(self.uint(1) & 1)

    def blob(self, limit: int) -> bytes:
        """Bytes with a drawn length (u16) up to ``limit``."""
        return self.raw(self.uint(2) % (limit + 1))

    def text(self, limit: int) -> str:
        """A string (lone surrogates and NULs possible) of at most ``limit`` characters."""
        raw = self.blob(2 * limit)
        return raw.decode("utf-16-le", "surrogatepass") if len(raw) % 2 == 0 else raw.decode(
            "latin-1"
        )
