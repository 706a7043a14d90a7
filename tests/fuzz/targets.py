"""The registry of fuzz targets, plus the selftest targets that prove the harness
catches what it should (they are run only when named)."""

from __future__ import annotations

import os

from hvguest.errors import WireError
from hvguest.wire import vss

from .harness import Target, fit, wire_error_ok
from .targets_ring import RING_TARGETS
from .targets_roles import ROLE_TARGETS
from .targets_wire import VSS_SEEDS, WIRE_TARGETS


def _broken_decoder(data: bytes) -> bool:
    """VssMessage.decode with a planted bug: for a THAW whose flags have the top bit
    set it reads byte 12 of the 12-byte message (IndexError)."""
    buf = fit(data, 12, 11, 13)
    try:
        msg = vss.VssMessage.decode(buf)
    except WireError as exc:
        wire_error_ok(exc)
        return False
    if msg.operation == vss.VssOp.THAW and msg.flags >= 0x8000_0000:
        return buf[12] > 0
    return True


def _rejects_everything(data: bytes) -> bool:
    """A target that never gets past its first check: fuzzes nothing."""
    return False


_calls = 0


def _stops_early(data: bytes) -> bool:
    """The process ends after 100 cases, as if the engine had given up."""
    global _calls
    _calls += 1
    if _calls >= 100:
        os._exit(0)
    return True


SELFTESTS = [
    Target("selftest_broken_decoder", _broken_decoder, VSS_SEEDS, selftest=True),
    Target("selftest_rejects_everything", _rejects_everything, selftest=True),
    Target("selftest_stops_early", _stops_early, selftest=True),
]

TARGETS: dict[str, Target] = {
    t.name: t for t in WIRE_TARGETS + RING_TARGETS + ROLE_TARGETS + SELFTESTS
}
