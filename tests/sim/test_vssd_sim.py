"""hvguest-vssd through the simulator: FUSE-served /dev/vmbus/hv_vss, a sandbox that
sees only the overlay root and the test's loop filesystems, the kernel's VSS model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from loop_images import ext4_images
from procstate import freeze_blocked

from hvguest.sim.client import SimClient

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.system]

OK, E_FAIL, INVALIDARG = 0, 0x80004005, 0x80070057
MNT_A, MNT_B = "/mnt/vss-a", "/mnt/vss-b"


def vssd(config: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "hvguest.daemons.vssd", "--log-target", "stderr"]
    return cmd + (["--config", config] if config else [])


def images(workdir: str, n: int = 2) -> list[tuple[str, str, str]]:
    return ext4_images(workdir, (MNT_A, MNT_B)[:n])


def start(workdir: str, config_text: str | None = None) -> SimClient:
    config = None
    if config_text is not None:
        config = os.path.join(workdir, "hvguest.yaml")
        with open(config, "w") as f:
            f.write(config_text)
    return SimClient.start(
        vssd(config),
        services=("vss",),
        loop_filesystems=images(workdir),
        network=False,
        workdir=workdir,
    )


def unfreeze_all(sim: SimClient) -> None:
    if sim.daemon_alive():
        for mnt in (MNT_A, MNT_B):
            sim.exec(["fsfreeze", "--unfreeze", mnt])


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimClient]:
    workdir = str(tmp_path_factory.mktemp("vssd"))
    with start(workdir) as client:
        try:
            yield client
        finally:
            unfreeze_all(client)


def writer(sim: SimClient, path: str) -> subprocess.Popen[bytes]:
    return sim.spawn(
        ["dd", "if=/dev/zero", f"of={path}", "bs=4096", "count=4", "conv=fsync", "status=none"]
    )


def test_hot_backup_answer(sim: SimClient) -> None:
    # status 0; the kernel forwards VSS_HBU_NO_AUTO_RECOVERY only when byte 0 is 2.
    assert sim.vss_hot_backup() == (OK, 0)


def test_freeze_blocks_writers_until_thaw(sim: SimClient) -> None:
    assert sim.vss_freeze() == OK
    w = writer(sim, f"{MNT_B}/during")
    try:
        assert freeze_blocked(w.pid), "the writer is not held by the freeze"
        assert sim.vss_thaw() == OK
        assert w.wait(20) == 0
    finally:
        if w.poll() is None:
            unfreeze_all(sim)
            w.wait(20)


def test_bad_requests_fail_clearly_and_daemon_keeps_serving(sim: SimClient) -> None:
    assert sim.vss_thaw() == E_FAIL  # THAW without FREEZE
    short = sim.vss_raw(bytes([5, 0, 0, 0]))
    assert len(short) == 12 and int.from_bytes(short[:4], "little") == INVALIDARG
    unknown = sim.vss_raw(bytes([99]) + bytes(11))
    assert int.from_bytes(unknown[:4], "little") == INVALIDARG
    assert sim.vss_freeze() == OK
    try:
        assert sim.vss_freeze() == E_FAIL  # double FREEZE: still frozen, not re-frozen
    finally:
        assert sim.vss_thaw() == OK
    assert sim.daemon_alive()
    assert sim.vss_freeze() == OK and sim.vss_thaw() == OK


def test_status_command_inside_the_guest(sim: SimClient) -> None:
    assert sim.vss_freeze() == OK and sim.vss_thaw() == OK
    time.sleep(0.2)
    out = sim.exec([sys.executable, "-m", "hvguest.cli.main", "vss", "status"])
    text = out.stdout.decode()
    assert out.returncode == 0, text + out.stderr.decode()
    assert "frozen now: no" in text and f"thawed      {MNT_A} (ext4)" in text


def test_sigkill_while_frozen_thawed_by_guard(tmp_path: pytest.TempPathFactory) -> None:
    workdir = str(tmp_path)
    with start(workdir, "vss:\n  auto_thaw: 20\n") as sim:
        try:
            assert sim.vss_freeze() == OK
            w = writer(sim, f"{MNT_A}/after-kill")
            assert freeze_blocked(w.pid), "the writer is not held by the freeze"
            t0 = time.monotonic()
            sim.signal_daemon(signal.SIGKILL)
            rc = w.wait(25)
            assert rc == 0 and time.monotonic() - t0 < 20
        finally:
            unfreeze_all(sim)


def test_hot_backup_flag_in_status_option(tmp_path: pytest.TempPathFactory) -> None:
    """With vss.hot_backup_flag_in_status the reply's byte 0 is 2, so the kernel hands
    VSS_HBU_NO_AUTO_RECOVERY (5) to the host, with the success status 2."""
    with start(str(tmp_path), "vss:\n  hot_backup_flag_in_status: true\n") as sim:
        assert sim.vss_hot_backup() == (2, 5)
        assert sim.vss_freeze() == OK and sim.vss_thaw() == OK
