"""hvguest-kvpd tells the host that direct access is on: ``hvguest.direct`` in pool 1
as the host enumerates it, put back after pool 1 is truncated (the withdrawal:
tests/unit/direct/test_direct_kvpd.py)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from hvguest.sim.client import SimClient

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.system]

ON = "direct:\n  enabled: true\n  port: 2222\nkvp:\n  republish_interval: 1\n"


def command(workdir: str, config: str) -> list[str]:
    path = os.path.join(workdir, "hvguest.yaml")
    with open(path, "w") as f:
        f.write(config)
    return [sys.executable, "-m", "hvguest.daemons.kvpd", "--config", path]


def test_published_and_kept(tmp_path: pytest.TempPathFactory) -> None:
    workdir = str(tmp_path)
    simdir = os.path.join(workdir, "sim")
    with SimClient.start(command(workdir, ON), workdir=simdir) as sim:
        assert dict(sim.kvp_enumerate_all(1)).get("hvguest.direct") == "ssh vsock:2222"
        with open(os.path.join(sim.root, "var/lib/hyperv/.kvp_pool_1"), "wb"):
            pass  # cloud-init's truncation at boot
        deadline = time.monotonic() + 10
        while dict(sim.kvp_enumerate_all(1)).get("hvguest.direct") != "ssh vsock:2222":
            assert time.monotonic() < deadline, "hvguest.direct was not put back"
            time.sleep(0.3)
