"""A full filesystem: a small loop-mounted ext4 as the allowed root.

The copy that does not fit is answered HV_ERROR_DISK_FULL (the reference answers
HV_E_FAIL), nothing appears at the final name, the space is given back at once,
and the next copy that fits succeeds.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from hvguest.daemons.fcopy_service import FcopyService
from hvguest.fcopy.settings import FcopySettings
from hvguest.wire.fcopy import DATA_FRAGMENT, FcopyComplete, FcopyStart, FcopyWrite
from hvguest.wire.status import HvStatus

pytestmark = [pytest.mark.root, pytest.mark.system]

IMAGE_MIB = 8


@pytest.fixture
def small_fs(tmp_path):
    if not shutil.which("mkfs.ext4"):
        pytest.skip("needs mkfs.ext4 (e2fsprogs)")
    image = tmp_path / "fs.img"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(IMAGE_MIB << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.parametrize("tmpfile", [True, False], ids=["O_TMPFILE", "hidden-name"])
def test_disk_full(small_fs, tmp_path, tmpfile):
    settings = FcopySettings(allowed_roots=[str(small_fs)])
    service = FcopyService(settings)
    service.writer.use_tmpfile = tmpfile
    before = free_bytes(small_fs)
    size = 2 * before  # cannot fit
    data = os.urandom(DATA_FRAGMENT)
    assert service.handle(FcopyStart("big.bin", str(small_fs), 0, size).encode(), utf16=False) == 0
    status = HvStatus.HV_S_OK
    offset = 0
    while offset < size:
        status = service.handle(FcopyWrite(offset, data).encode(), utf16=False)
        if status != HvStatus.HV_S_OK:
            break
        offset += len(data)
    assert status == HvStatus.HV_ERROR_DISK_FULL
    assert 0 < offset < size
    # Whatever the host sends next for this transfer is refused with the same
    # status, without writing.
    full = HvStatus.HV_ERROR_DISK_FULL
    assert service.handle(FcopyWrite(offset, data).encode(), utf16=False) == full
    assert service.handle(FcopyComplete().encode(), utf16=False) == full
    assert sorted(os.listdir(small_fs)) == ["lost+found"]
    assert free_bytes(small_fs) >= before - (64 << 10)
    assert service.recent[-1]["result"] == "HV_ERROR_DISK_FULL"
    # The daemon keeps serving: a copy that fits succeeds.
    assert service.handle(FcopyStart("small", str(small_fs), 0, 5).encode(), utf16=False) == 0
    assert service.handle(FcopyWrite(0, b"fits!").encode(), utf16=False) == 0
    assert service.handle(FcopyComplete().encode(), utf16=False) == 0
    assert (small_fs / "small").read_bytes() == b"fits!"


@pytest.mark.fuse
@pytest.mark.parametrize("transport", ["legacy", "uio"])
def test_disk_full_through_the_simulator(tmp_path, transport):
    """The same through the real daemon: the loop filesystem is mounted inside the
    sandbox and is the only allowed root."""
    import sys

    from hvguest.sim.client import SimClient

    if not shutil.which("mkfs.ext4"):
        pytest.skip("needs mkfs.ext4 (e2fsprogs)")
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(IMAGE_MIB << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    config = tmp_path / "hvguest.yaml"
    config.write_text("fcopy:\n  allowed_roots: [/mnt/small]\n  create_roots: false\n")
    source = tmp_path / "big.bin"
    with open(source, "wb") as f:
        f.write(os.urandom(2 * IMAGE_MIB << 20))
    small = tmp_path / "small.bin"
    small.write_bytes(b"fits")
    command = [sys.executable, "-m", "hvguest.daemons.fcopyd", "--config", str(config)]
    with SimClient.start(
        command,
        services=("fcopy",),
        fcopy=transport,
        loop_filesystems=[(str(image), "ext4", "/mnt/small")],
        workdir=str(tmp_path / "sim"),
    ) as sim:
        assert sim.call("wait_registered")
        status = sim.fcopy_send(str(source), "/mnt/small", "big.bin")
        assert status == HvStatus.HV_ERROR_DISK_FULL, sim.last_steps[-3:]
        listing = sim.exec(["ls", "-A", "/mnt/small"]).stdout.decode().split()
        assert listing == ["lost+found"]
        assert sim.fcopy_send(str(small), "/mnt/small", "small.bin") == HvStatus.HV_S_OK
        assert sim.exec(["cat", "/mnt/small/small.bin"]).stdout == b"fits"
        assert sim.daemon_alive()
