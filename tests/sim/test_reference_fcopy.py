"""The unmodified legacy hv_fcopy_daemon receives files through the simulated driver."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from hvguest.sim.client import SimClient

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.reference, pytest.mark.system]

HV_S_OK = 0
HV_E_FAIL = 0x80004005
HV_ERROR_ALREADY_EXISTS = 0x80070050
OVER_WRITE, CREATE_PATH = 1, 2


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimClient]:
    workdir = str(tmp_path_factory.mktemp("reffcopy"))
    with SimClient.start(["/usr/sbin/hv_fcopy_daemon", "-n"], services=("fcopy",),
                         network=False, workdir=workdir) as client:
        yield client


def _sha(sim: SimClient, path: str) -> str:
    out = sim.exec(["sha256sum", path], timeout=60).stdout.split()
    return out[0].decode() if out else ""


@pytest.mark.slow
def test_64_mib_file_arrives_intact(sim: SimClient, tmp_path: str) -> None:
    src = os.path.join(tmp_path, "big.bin")
    digest = hashlib.sha256()
    with open(src, "wb") as f:
        for i in range(64):
            block = hashlib.sha256(str(i).encode()).digest() * (1 << 15)  # 1 MiB
            f.write(block)
            digest.update(block)
    assert sim.fcopy_send(src, "/tmp", "big.bin") == HV_S_OK
    assert set(sim.last_steps) == {HV_S_OK}
    assert len(sim.last_steps) == 1 + (64 << 20) // 6144 + 1 + 1  # START, WRITEs, COMPLETE
    assert _sha(sim, "/tmp/big.bin") == digest.hexdigest()


def test_existing_file_needs_overwrite(sim: SimClient, tmp_path: str) -> None:
    src = os.path.join(tmp_path, "small.txt")
    with open(src, "wb") as f:
        f.write(b"first\n")
    assert sim.fcopy_send(src, "/tmp", "small.txt") == HV_S_OK
    assert sim.fcopy_send(src, "/tmp", "small.txt") == HV_ERROR_ALREADY_EXISTS
    with open(src, "wb") as f:
        f.write(b"second\n")
    assert sim.fcopy_send(src, "/tmp", "small.txt", flags=OVER_WRITE) == HV_S_OK
    assert sim.exec(["cat", "/tmp/small.txt"]).stdout == b"second\n"


def test_create_path_and_cancel(sim: SimClient, tmp_path: str) -> None:
    src = os.path.join(tmp_path, "part.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(6144 * 4))
    assert sim.fcopy_send(src, "/srv/a/b/", "x.bin") == HV_E_FAIL  # no CREATE_PATH
    assert sim.fcopy_send(src, "/srv/a/b/", "x.bin", flags=CREATE_PATH) == HV_S_OK
    assert sim.exec(["test", "-f", "/srv/a/b/x.bin"]).returncode == 0
    # CANCEL after two fragments: the legacy daemon removes the partial file.
    status = sim.fcopy_send(src, "/tmp", "part.bin", cancel_after_bytes=2 * 6144)
    assert status == HV_S_OK, sim.last_steps
    assert sim.exec(["test", "-e", "/tmp/part.bin"]).returncode != 0
    assert sim.daemon_alive()
