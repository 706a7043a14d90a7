"""The kernel's UTF-8 <-> UTF-16 converters (fs/nls), with their exact quirks.

The KVP and legacy FCOPY drivers convert every string the host sends and every string
the daemon returns. What the host finally sees depends on these details:

* UTF-16 -> UTF-8 stops at a 0 unit or after ``inlen`` units; lone surrogates are
  dropped; a character that no longer fits in ``maxout`` bytes is skipped while
  later, shorter characters may still be written. The output is not NUL-terminated
  (the kernel's buffers are zero-filled, so callers leave room).
* UTF-8 -> UTF-16 stops at NUL, ``inlen`` or ``maxout`` units (a supplementary
  character needing two units when one is left ends the string); any invalid or
  truncated sequence (overlong, surrogate, > U+10FFFF) fails the whole conversion.
"""

from __future__ import annotations

_SURROGATE_MASK = 0xF800
_SURROGATE_PAIR = 0xD800
_SURROGATE_LOW = 0x0400


def _utf8_len(cp: int) -> int:
    if cp < 0x80:
        return 1
    if cp < 0x800:
        return 2
    if cp < 0x10000:
        return 3
    return 4


def utf16_to_utf8(units_le: bytes, inlen: int, maxout: int) -> bytes:
    """Kernel utf16s_to_utf8s: ``inlen`` counts UTF-16 units, ``maxout`` output bytes."""
    n = min(inlen, len(units_le) // 2)
    units = [int.from_bytes(units_le[2 * i : 2 * i + 2], "little") for i in range(n)]
    out = bytearray()
    i = 0
    while i < n and maxout > 0:
        u = units[i]
        if u == 0:
            break
        i += 1
        if u < 0x80:
            out.append(u)
            maxout -= 1
            continue
        if (u & _SURROGATE_MASK) == _SURROGATE_PAIR:
            if u & _SURROGATE_LOW:
                continue  # lone low surrogate: dropped
            if i >= n:
                break
            v = units[i]
            if (v & _SURROGATE_MASK) != _SURROGATE_PAIR or not (v & _SURROGATE_LOW):
                continue  # high surrogate without its low half: dropped
            u = 0x10000 + ((u & 0x3FF) << 10) + (v & 0x3FF)
            i += 1
        size = _utf8_len(u)
        if size > maxout:
            continue  # does not fit: skipped, later characters may still fit
        out += chr(u).encode("utf-8")
        maxout -= size
    return bytes(out)


def _seq_len(lead: int) -> int:
    if 0xC0 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    if 0xF0 <= lead < 0xF8:
        return 4
    return 0  # continuation byte, 5/6-byte forms (always > U+10FFFF), 0xFE/0xFF


def utf8_to_utf16(data: bytes, maxout: int) -> tuple[bytes, bool]:
    """Kernel utf8s_to_utf16s over ``data`` (already cut at strlen).

    Returns the LE units written and whether the conversion succeeded: on an invalid
    sequence the kernel has already stored the units before it, then returns -EINVAL.
    """
    out = bytearray()
    i = 0
    while i < len(data) and maxout > 0 and data[i] != 0:
        b = data[i]
        if b < 0x80:
            out += bytes((b, 0))
            i += 1
            maxout -= 1
            continue
        size = _seq_len(b)
        if size == 0 or i + size > len(data):
            return bytes(out), False
        try:
            cp = ord(data[i : i + size].decode("utf-8"))
        except UnicodeDecodeError:
            return bytes(out), False
        i += size
        if cp >= 0x10000:
            if maxout < 2:
                break
            out += chr(cp).encode("utf-16-le")
            maxout -= 2
        else:
            out += cp.to_bytes(2, "little")
            maxout -= 1
    return bytes(out), True


def cstr(data: bytes, start: int, limit: int | None = None) -> bytes:
    """strlen() from ``start``: bytes up to the first NUL (or ``limit``/end of data)."""
    end = len(data) if limit is None else min(len(data), start + limit)
    nul = data.find(b"\0", start, end)
    return data[start : (end if nul < 0 else nul)]
