"""What the fcopy differential tests (legacy and UIO) share: deterministic contents,
the files a scenario left, and a host that sends WRITEs out of the usual order."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hvguest.sim.client import SimClient
from hvguest.wire.fcopy import DATA_FRAGMENT, OVER_WRITE, FcopyComplete, FcopyStart, FcopyWrite

F = DATA_FRAGMENT

# Irregular WRITE orders a host might send after a late reply (size, [(start, end)]):
# every guest daemon writes at the offset given.
IRREGULAR: dict[str, tuple[int, list[tuple[int, int]]]] = {
    "resend_fragment": (3 * F + 100, [(0, F), (F, 2 * F), (F, 2 * F), (2 * F, 3 * F),
                                      (3 * F, 3 * F + 100)]),
    "partial_resend": (3 * F + 500, [(0, F), (3000, 3000 + F), (3000 + F, 3000 + 2 * F),
                                     (3000 + 2 * F, 3 * F + 500)]),
    "sparse_gap": (4 * F, [(0, F), (2 * F, 3 * F), (3 * F, 4 * F)]),
    "out_of_order": (3 * F + 7, [(F, 2 * F), (0, F), (2 * F, 3 * F), (3 * F, 3 * F + 7)]),
    "zero_length_writes": (2 * F + 9, [(0, F), (F, F), (100, 100), (F, 2 * F),
                                       (2 * F, 2 * F + 9), (2 * F + 9, 2 * F + 9)]),
}


@dataclass
class Outcome:
    """What the host and the guest can observe after one scenario."""

    statuses: list[int]
    files: dict[str, Any] = field(default_factory=dict)  # path -> (bytes, mode) or None
    negotiated: dict[str, str] | None = None  # the UIO channel's negotiation


Scenario = Callable[[SimClient, str], Outcome]


def look(sim: SimClient, *paths: str) -> dict[str, Any]:
    """path -> (contents, mode) of a regular file, or None (absent, a link, not a file)."""
    out: dict[str, Any] = {}
    for path in paths:
        full = f"{sim.root}{path}"
        if os.path.isfile(full) and not os.path.islink(full):
            with open(full, "rb") as f:
                out[path] = (f.read(), stat.S_IMODE(os.stat(full).st_mode))
        else:
            out[path] = None
    return out


def pattern(size: int, seed: int = 1) -> bytes:
    """Deterministic contents, so both runs send the same bytes."""
    block = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size // 32 + 1))
    return block[:size]


def src(workdir: str, data: bytes, name: str = "src") -> str:
    path = os.path.join(workdir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def raw_copy(
    sim: SimClient,
    directory: str,
    name: str,
    data: bytes,
    ranges: list[tuple[int, int]],
    *,
    utf16: bool = False,
) -> list[int]:
    """START, one WRITE per (start, end) range of ``data`` in the given order, COMPLETE:
    what a host that resends or skips would send. Every status is kept. ``utf16``: the
    host's own encoding, as the UIO channel carries it."""
    statuses = [sim.fcopy_raw(FcopyStart(name, directory, 0, len(data)).encode(utf16=utf16))]
    for start, end in ranges:
        statuses.append(
            sim.fcopy_raw(FcopyWrite(start, data[start:end]).encode(utf16=utf16))
        )
    statuses.append(sim.fcopy_raw(FcopyComplete().encode(utf16=utf16)))
    return statuses


def irregular_contents(name: str) -> tuple[bytes, bytes]:
    """(what the host sends, what the file must hold: holes read as zeros)."""
    size, ranges = IRREGULAR[name]
    data = pattern(size, 4)
    expected = bytearray(size)
    for start, end in ranges:
        expected[start:end] = data[start:end]
    return data, bytes(expected)


def empty_file(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, b""), "/tmp", "empty")
    return Outcome([st], look(sim, "/tmp/empty"))


def existing_without_overwrite(sim: SimClient, w: str) -> Outcome:
    sim.exec(["sh", "-c", "printf old > /tmp/exists"])
    st = sim.fcopy_send(src(w, b"new"), "/tmp", "exists", 0)
    return Outcome([st], {"/tmp/exists": look(sim, "/tmp/exists")["/tmp/exists"][0]})


def existing_with_overwrite(sim: SimClient, w: str) -> Outcome:
    sim.exec(["sh", "-c", "printf old > /tmp/exists2"])
    st = sim.fcopy_send(src(w, b"new contents"), "/tmp", "exists2", OVER_WRITE)
    return Outcome([st], {"/tmp/exists2": look(sim, "/tmp/exists2")["/tmp/exists2"][0]})
