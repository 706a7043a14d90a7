"""Loop devices of ``hvguest-sim serve --loop-fs`` go away even when the simulator
is SIGKILLed (no clean-up of its own runs): they are attached with autoclear."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from hvguest.sim.client import SimClient

pytestmark = [pytest.mark.root]


def attached(image: str) -> list[str]:
    out = subprocess.run(["losetup", "-j", image], capture_output=True, text=True,
                         timeout=10).stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if line]


def test_sigkilled_simulator_leaves_no_loop_device(tmp_path):
    image = str(tmp_path / "ext4.img")
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, timeout=60)
    sim = SimClient.start(["sleep", "600"], services=("kvp",), network=False,
                          loop_filesystems=[(image, "ext4", "/mnt/hvtest")],
                          workdir=str(tmp_path / "sim"), wait_registered=False)
    try:
        (dev,) = attached(image)
        name = os.path.basename(dev)
        with open(f"/sys/block/{name}/loop/autoclear") as f:
            autoclear = f.read().strip()
        assert sim._proc is not None
        os.kill(sim._proc.pid, signal.SIGKILL)
        sim._proc.wait(10)
        deadline = time.monotonic() + 30
        while attached(image) and time.monotonic() < deadline:
            time.sleep(0.1)  # the namespace (and its mount) goes with its last process
        left = attached(image)
    finally:
        for dev in attached(image):  # never leave one behind, whatever happened
            subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=10)
        sim._sock.close()
    assert autoclear == "1"
    assert left == [], f"{left} still attached after the simulator was killed"
