"""Showing strings from outside (the host, other processes, files) on a terminal or a log.

``printable(s)`` is the one escaping function: every string hvguestctl prints that came
from the host or another process, and every message the stderr log fallback writes,
goes through it. It escapes what could move the cursor, rewrite the screen, forge a
line or reorder text, and leaves everything else (accents, CJK, backslashes) as it is,
so a benign value prints unchanged and ``hvguestctl kvp get`` stays usable in scripts:

* C0 controls, DEL and C1 controls: ``\\n``, ``\\r``, ``\\t`` or ``\\xHH``;
* Unicode line and paragraph separators (U+2028, U+2029), lone surrogates and the
  bidirectional formatting characters ("Trojan source"): ``\\uHHHH``.

``--json`` output is never passed through it: it stays exact. JSON escapes C0 controls
itself; ``terminal_safe_json`` escapes the few characters JSON leaves raw (DEL, C1, line
separators, bidi controls) as ``\\uXXXX``, which decodes to the same value.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Characters str.isprintable() accepts that still reorder what the reader sees.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff" + _BIDI + "]"
)


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` (str() of it) with every control or line-breaking character escaped."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, s)


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff" + _BIDI + "]")


def terminal_safe_json(text: str) -> str:
    """JSON text made with ``ensure_ascii=False`` with the characters JSON leaves raw but a
    terminal may act on (DEL, C1, line separators, bidi controls) written as ``\\uXXXX``
    escapes: it decodes to the same value, and leaves nothing for a terminal to act on.
    These characters can only occur inside JSON strings, where the escape is valid."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def write_line(out: TextIO, text: object) -> None:
    """One line of a text view: ``text`` escaped, then the line end."""
    out.write(printable(text) + "\n")


def say(text: object = "", *, file: TextIO | None = None, flush: bool = False) -> None:
    """``print()`` for text views: one escaped line on stdout (or ``file``)."""
    out = file if file is not None else sys.stdout
    write_line(out, text)
    if flush:
        out.flush()
