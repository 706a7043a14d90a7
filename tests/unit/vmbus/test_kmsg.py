"""Negotiated IC versions from the kernel log records."""

from __future__ import annotations

import os
from typing import Any

from hvguest.paths import Paths
from hvguest.vmbus import kmsg


def test_last_negotiation_wins_and_continuations_ignored(tmp_path: Any) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "kmsg").write_text(
        "6,1,5,-;hv_utils: Heartbeat IC version 1.0\n"
        " DEVICE=+vmbus:fd149e91\n"
        "6,2,9,-;random text mentioning VSS IC version 9.9 later\n"
        "6,3,12,-;hv_utils: Heartbeat IC version 3.0\n"
        "6,4,13,-;hv_utils: TimeSync IC version 4.0")  # no final newline
    assert kmsg.ic_versions(Paths(dev=str(dev))) == {"heartbeat": "3.0", "vss": "9.9",
                                                     "timesync": "4.0"}


def test_missing_and_unreadable(tmp_path: Any) -> None:
    assert kmsg.ic_versions(Paths(dev=str(tmp_path))) == {}
    os.mkdir(tmp_path / "kmsg")  # read() of a directory fails like a refused device
    unreadable: list[str] = []
    assert kmsg.ic_versions(Paths(dev=str(tmp_path)), unreadable) == {}
    assert unreadable and "kernel log" in unreadable[0]
