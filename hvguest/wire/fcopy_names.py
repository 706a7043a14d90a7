"""Host-supplied file and directory names: which characters are refused, and how a
name is shown in logs and records.

A file name with ESC, BEL or a newline is legal on Linux, but it forges lines in
the journal and in ``hvguestctl`` output and drives the admin's terminal, and no
Windows file name can contain C0 controls anyway. Refused: C0 controls
(U+0000-U+001F), DEL (U+007F), C1 controls (U+0080-U+009F, NEL U+0085 among them)
and the Unicode line and paragraph separators U+2028/U+2029. Lone surrogates cannot
arrive (names are decoded strictly) but are refused too.
"""

from __future__ import annotations

import re

# Everything a terminal or a line-oriented reader could take for control.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def first_unsafe(text: str) -> tuple[int, str] | None:
    """(index, character) of the first refused character, or None."""
    match = _UNSAFE.search(text)
    return None if match is None else (match.start(), match.group())


def escape(text: str) -> str:
    """``text`` with every refused character written as ``\\xNN`` / ``\\uNNNN``: safe
    for one log line or one terminal line, and identical for an accepted name."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def unsafe_reason(what: str, text: str) -> str | None:
    """Why ``text`` is refused, naming the character and where it is; None if fine."""
    found = first_unsafe(text)
    if found is None:
        return None
    index, char = found
    return (
        f"{what} '{escape(text)}' contains the control character U+{ord(char):04X} "
        f"at position {index}; control characters and line separators are refused"
    )
