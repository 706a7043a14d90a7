"""Shared helpers for the fixed-layout codecs: integers and NUL-terminated string fields.

Every failure is a WireError naming the field and the limit, so decoders never leak
struct.error, IndexError or UnicodeDecodeError to their callers.
"""

from __future__ import annotations

import struct

from hvguest.errors import WireError

_UINT_FORMATS = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


def check_length(data: bytes, expected: int, what: str) -> None:
    """Refuse a buffer whose size is not exactly ``expected``."""
    if len(data) != expected:
        raise WireError(
            f"{what} is {len(data)} bytes, expected exactly {expected}",
            field="length",
            limit=expected,
        )


def check_min_length(data: bytes, minimum: int, what: str, field: str = "length") -> None:
    """Refuse a buffer shorter than ``minimum``."""
    if len(data) < minimum:
        raise WireError(
            f"{what} is {len(data)} bytes, need at least {minimum}",
            field=field,
            limit=minimum,
        )


def get_uint(data: bytes, offset: int, size: int) -> int:
    """Little-endian unsigned integer of ``size`` bytes at ``offset`` (caller checked length)."""
    return int.from_bytes(data[offset : offset + size], "little")


def pack_uint(value: int, size: int, field: str) -> bytes:
    """Little-endian unsigned integer; WireError if ``value`` does not fit ``size`` bytes."""
    limit = 1 << (8 * size)
    if not isinstance(value, int) or not 0 <= value < limit:
        raise WireError(
            f"{field} is {value!r}, must be an integer in [0, {limit - 1}]",
            field=field,
            limit=limit - 1,
        )
    return struct.pack(_UINT_FORMATS[size], value)


def pack_status(status: int, field: str = "status") -> bytes:
    """A status word: the C field is an ``int`` sent as 32 bits, so -1 is 0xFFFFFFFF."""
    if not isinstance(status, int) or not -(1 << 31) <= status < (1 << 32):
        raise WireError(
            f"{field} is {status!r}, must fit 32 bits",
            field=field,
            limit=0xFFFFFFFF,
        )
    return struct.pack("<I", status & 0xFFFFFFFF)


def registration_echo(buf: bytes, expected: int, what: str) -> int:
    """The kernel's 4-byte registration echo: a u32 that must equal ``expected``."""
    check_length(buf, 4, what)
    version = get_uint(buf, 0, 4)
    if version != expected:
        raise WireError(
            f"{what} is {version}, expected {expected}", field="version", limit=expected
        )
    return version


def put(buf: bytearray, offset: int, data: bytes) -> None:
    """Copy ``data`` into ``buf`` at ``offset`` (caller guarantees it fits)."""
    buf[offset : offset + len(data)] = data


# ---------------------------------------------------------------------------
# UTF-8 fields


def cut_nul(raw: bytes) -> bytes:
    """The bytes before the first NUL (all of ``raw`` if there is none)."""
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def terminated(raw: bytes, field: str) -> bytes:
    """The bytes before the first NUL; WireError if ``raw`` holds no NUL."""
    end = raw.find(b"\0")
    if end < 0:
        raise WireError(
            f"{field} has no NUL terminator within its {len(raw)} bytes",
            field=field,
            limit=len(raw),
        )
    return raw[:end]


def pack_fields(message: object, layout: tuple[tuple[str, int], ...]) -> bytes:
    """``message``'s integer attributes packed little-endian in ``layout`` order, each
    ``(name, size)`` checked like ``pack_uint`` (the error names the field)."""
    return b"".join(pack_uint(getattr(message, name), size, name) for name, size in layout)


def _not_valid(field: str, label: str, where: str) -> WireError:
    """The error for a field that does not decode as ``label`` (UTF-8 or UTF-16)."""
    return WireError(f"{field} is not valid {label} {where}", field=field, limit=label)


def utf8_text(raw: bytes, field: str) -> str:
    """Strict UTF-8 decoding of an already NUL-cut field."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"at byte {exc.start}: {raw[exc.start : exc.start + 4]!r}"
        raise _not_valid(field, "UTF-8", where) from exc


def _encode(text: str, field: str, codec: str, label: str) -> bytes:
    """``text`` in ``codec``; WireError for a non-str, a NUL inside or a lone surrogate."""
    if not isinstance(text, str):
        raise WireError(f"{field} must be str, got {type(text).__name__}", field=field)
    if "\0" in text:
        raise WireError(f"{field} contains a NUL character", field=field, limit="no NUL")
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise WireError(
            f"{field} cannot be encoded as {label} (lone surrogate at {exc.start})",
            field=field,
            limit=label,
        ) from exc


def _encode_within(text: str, field: str, codec: str, limit: int, unit: int) -> bytes:
    """``text`` in ``codec`` (UTF-8 or UTF-16LE), at most ``limit`` units of ``unit``
    bytes; the error names the limit in the unit the field is measured in."""
    label, measure = ("UTF-8", "bytes of UTF-8") if unit == 1 else ("UTF-16", "UTF-16 code units")
    raw = _encode(text, field, codec, label)
    if len(raw) // unit > limit:
        raise WireError(
            f"{field} is {len(raw) // unit} {measure}, limit {limit} plus the NUL",
            field=field,
            limit=limit,
        )
    return raw


def utf8_bytes(text: str, field: str, max_bytes: int) -> bytes:
    """UTF-8 bytes of ``text`` without NUL; WireError if longer than ``max_bytes``.

    ``max_bytes`` excludes the terminating NUL the caller appends.
    """
    return _encode_within(text, field, "utf-8", max_bytes, 1)


def utf8_field(text: str, field: str, size: int) -> bytes:
    """A zero-filled ``size``-byte field holding ``text`` as UTF-8 plus NUL."""
    return utf8_bytes(text, field, size - 1).ljust(size, b"\0")


# ---------------------------------------------------------------------------
# UTF-16LE fields


def utf16_cut(raw: bytes) -> bytes | None:
    """The code units before the first 0 unit; None if there is no 0 unit."""
    for pos in range(0, len(raw) - 1, 2):
        if raw[pos] == 0 and raw[pos + 1] == 0:
            return raw[:pos]
    return None


def utf16_text(raw: bytes, field: str, *, require_nul: bool = True) -> str:
    """Strict UTF-16LE decoding of a field, cut at its first 0 code unit."""
    cut = utf16_cut(raw)
    if cut is None:
        if require_nul:
            raise WireError(
                f"{field} has no 0 code unit within its {len(raw) // 2} code units",
                field=field,
                limit=len(raw) // 2,
            )
        cut = raw[: len(raw) - len(raw) % 2]
    try:
        return cut.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        where = f"(unpaired surrogate at byte {exc.start})"
        raise _not_valid(field, "UTF-16", where) from exc


def utf16_bytes(text: str, field: str, max_units: int) -> bytes:
    """UTF-16LE bytes of ``text`` without NUL; WireError beyond ``max_units`` code units."""
    return _encode_within(text, field, "utf-16-le", max_units, 2)


def utf16_field(text: str, field: str, size: int) -> bytes:
    """A zero-filled ``size``-byte field holding ``text`` as UTF-16LE plus a 0 unit."""
    return utf16_bytes(text, field, size // 2 - 1).ljust(size, b"\0")
