"""The host's public keys in KVP pool 0, for sshd's AuthorizedKeysCommand.

The host places one key per item, ``hvguest.ssh.authorized_key.<n>`` with ``n`` in
0..99 written without leading zeros. Each value must pass ``keys.parse_key_line``;
one that does not is left out and reported, never passed on, and never stops the
others. Output lines are rebuilt from the parsed key (no options, one line each).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from hvguest.direct.keys import AuthorizedKey, KeyLineError, parse_key_line
from hvguest.text import printable

KEY_PREFIX = "hvguest.ssh.authorized_key."
MAX_KEYS = 100
KEYS_POOL = 0  # the host -> guest pool ("external")
_INDEX = re.compile(r"0|[1-9][0-9]?", re.ASCII)


@dataclass
class Selection:
    keys: list[tuple[str, AuthorizedKey]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (item, reason), escaped

    def lines(self) -> list[str]:
        return [key.line() for _, key in self.keys]


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint: ``SHA256:<base64 without padding>``."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def select_keys(items: Iterable[tuple[str, str]]) -> Selection:
    """The acceptable keys among pool items (other items are not ours and ignored)."""
    out = Selection()
    seen: set[str] = set()
    for name, value in items:
        if not name.startswith(KEY_PREFIX):
            continue
        shown = printable(name[:80])
        index = name[len(KEY_PREFIX):]
        if _INDEX.fullmatch(index) is None:
            out.rejected.append(
                (shown, f"item name does not end in a number 0..{MAX_KEYS - 1}"))
            continue
        if name in seen:
            continue  # the first record of a key wins, as for every pool reader
        seen.add(name)
        try:
            out.keys.append((name, parse_key_line(value, name)))
        except KeyLineError as exc:
            out.rejected.append((shown, printable(str(exc))))
    return out
