"""The unmodified reference hv_vss_daemon freezes and thaws a loop-mounted ext4."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from procstate import freeze_blocked

from hvguest.sim.client import SimClient

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.reference, pytest.mark.system]

HV_S_OK = 0
MNT = "/mnt/vsstest"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimClient]:
    workdir = tmp_path_factory.mktemp("refvss")
    image = str(workdir / "ext4.img")
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, timeout=60)
    with SimClient.start(["/usr/sbin/hv_vss_daemon", "-n"], services=("vss",),
                         loop_filesystems=[(image, "ext4", MNT)], network=False,
                         workdir=str(workdir)) as client:
        try:
            yield client
        finally:
            if client.daemon_alive():
                client.exec(["fsfreeze", "--unfreeze", MNT])


def test_hot_backup_is_answered_and_flags_return_unchanged(sim: SimClient) -> None:
    assert sim.vss_hot_backup() == (HV_S_OK, 0)


def test_freeze_blocks_writers_until_thaw(sim: SimClient) -> None:
    assert sim.exec(["sh", "-c", f"echo before > {MNT}/before"]).returncode == 0
    assert sim.vss_freeze() == HV_S_OK
    writer = sim.spawn(["dd", "if=/dev/zero", f"of={MNT}/during", "bs=4096", "count=4",
                        "conv=fsync", "status=none"])
    try:
        assert freeze_blocked(writer.pid), "the writer is not held by the freeze"
        assert sim.vss_thaw() == HV_S_OK
        assert writer.wait(20) == 0
    finally:
        if writer.poll() is None:
            sim.exec(["fsfreeze", "--unfreeze", MNT])
            writer.wait(20)
    size = sim.exec(["stat", "-c", "%s", f"{MNT}/during"]).stdout.strip()
    assert size == b"16384"


def test_thaw_without_freeze_succeeds(sim: SimClient) -> None:
    # FITHAW's EINVAL on an unfrozen filesystem counts as success in the reference.
    assert sim.vss_thaw() == HV_S_OK
    assert sim.daemon_alive()
