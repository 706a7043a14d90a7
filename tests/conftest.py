"""Shared pytest plumbing: capability checks that skip with a stated reason."""

from __future__ import annotations

import os
import shutil

import pytest


def _is_root() -> bool:
    return os.geteuid() == 0


def _has_fuse() -> bool:
    return os.path.exists("/dev/fuse") and os.access("/dev/fuse", os.R_OK | os.W_OK)


def _has_reference(name: str) -> bool:
    return os.path.exists(f"/usr/sbin/{name}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {
        "root": (None if _is_root() else "needs root (namespaces, mounts, loop devices)"),
        "fuse": (None if _is_root() and _has_fuse() else "needs root and /dev/fuse"),
        "reference": (
            None
            if _has_reference("hv_kvp_daemon")
            else "needs Debian's hyperv-daemons (apt-get install hyperv-daemons)"
        ),
        "e2e": (
            None
            if _is_root() and shutil.which("debootstrap") and shutil.which("systemd-nspawn")
            else "needs root, debootstrap and systemd-nspawn"
        ),
    }
    for item in items:
        for mark, reason in reasons.items():
            if reason and item.get_closest_marker(mark):
                item.add_marker(pytest.mark.skip(reason=reason))
                break
