"""The unmodified legacy hv_fcopy_daemon receives files through the simulated driver."""

from __future__ import annotations

import hashlib
import os
import struct
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


# -- the UIO channel (kernels >= 6.10) ------------------------------------------------------
# A minimal guest for the UIO path, run inside the sandbox: it maps /dev/uio0 (FUSE
# passthrough to the ring file), answers NEGOTIATE with 3.0/1.1 and every FCOPY request
# with status 0x100 + operation, and appends each START's file name to /tmp/probe.log.
UIO_PROBE = r"""
import mmap, os, struct, sys
dev = "/sys/bus/vmbus/devices/eb765408-105f-49b6-b4aa-c123b64d17d4"
size = int(open(dev + "/uio/uio0/maps/map0/size").read(), 16) // 2
fd = os.open("/dev/uio0", os.O_RDWR)
m = mmap.mmap(fd, 2 * size)
TX, RX, D = 0, size, size - 4096
u32 = lambda off: struct.unpack_from("<I", m, off)[0]
def copy_out(base, start, n):
    first = min(n, D - start)
    data = base + 4096
    return m[data + start: data + start + first] + m[data: data + n - first]
def copy_in(base, start, data):
    first = min(len(data), D - start)
    m[base + 4096 + start: base + 4096 + start + first] = data[:first]
    m[base + 4096: base + 4096 + len(data) - first] = data[first:]
struct.pack_into("<I", m, RX + 8, 0)
while True:
    os.read(fd, 4)
    while (u32(RX) - u32(RX + 4)) % D:
        r = u32(RX + 4)
        _t, off8, len8, _f, tid = struct.unpack("<HHHHQ", copy_out(RX, r, 16))
        pkt = bytearray(copy_out(RX, r, len8 * 8)[off8 * 8:])
        struct.pack_into("<I", m, RX + 4, (r + len8 * 8 + 8) % D)
        if pkt[12] == 0:
            pkt[28:32] = b"\x01\x00\x01\x00"
            pkt[36:44] = struct.pack("<HHHH", 3, 0, 1, 1)
            status = 0
        else:
            op = struct.unpack_from("<I", pkt, 28)[0]
            status = 0x100 + op
            if op == 0:
                name = pkt[64:584].decode("utf-16-le").split("\0")[0]
                open("/tmp/probe.log", "a").write(name + "\n")
        struct.pack_into("<I", pkt, 20, status)
        pkt[25] = 5
        out = struct.pack("<HHHHQ", 6, 2, (16 + len(pkt)) // 8, 0, tid) + bytes(pkt)
        w = u32(TX)
        copy_in(TX, w, out + struct.pack("<Q", w << 32))
        struct.pack_into("<I", m, TX, (w + len(out) + 8) % D)
    os.write(fd, struct.pack("<i", 1))
"""


@pytest.mark.parametrize("ring", [0x5000, 0x4000])
def test_uio_channel_with_a_probe_guest(tmp_path: str, ring: int) -> None:
    import sys

    src = os.path.join(tmp_path, "f.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(40 * 6144))  # 40 fragments: the 12/16 KiB data area wraps
    with SimClient.start([sys.executable, "-c", UIO_PROBE], services=("fcopy",),
                         fcopy="uio", uio_ring_size=ring, network=False,
                         workdir=os.path.join(tmp_path, "sim")) as sim:
        assert sim.fcopy_send(src, "/tmp", "naïve.bin") == 0x100  # START's status
        assert sim.last_steps == [0x100]
        assert sim.fcopy_raw(struct.pack("<I", 2) + bytes(32)) == 0x102
        nego = sim.transcript()[0]
        assert nego["fields"] == {"framework": "3.0", "service": "1.1"}
        assert sim.exec(["cat", "/tmp/probe.log"]).stdout.decode() == "naïve.bin\n"


def test_uio_fragments_wrap_the_ring(tmp_path: str) -> None:
    import sys

    probe = UIO_PROBE.replace("status = 0x100 + op", "status = 0")
    src = os.path.join(tmp_path, "f.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(40 * 6144))
    with SimClient.start([sys.executable, "-c", probe], services=("fcopy",), fcopy="uio",
                         network=False, workdir=os.path.join(tmp_path, "sim")) as sim:
        assert sim.fcopy_send(src, "/tmp", "wrap.bin") == HV_S_OK
        assert sim.last_steps == [HV_S_OK] * 42


# The upstream UIO daemon is not packaged for Debian 12: scripts/setup builds it from
# Debian's linux-source package into .venv/reference (HVGUEST_UIO_REFERENCE overrides).
UIO_DAEMON = os.environ.get(
    "HVGUEST_UIO_REFERENCE",
    os.path.join(os.path.dirname(__file__), "..", "..", ".venv", "reference",
                 "hv_fcopy_uio_daemon"),
)


def uio_reference() -> str:
    """The oracle's path; a missing oracle is a failure (CI builds it), not a skip."""
    if not os.access(UIO_DAEMON, os.X_OK):
        pytest.fail(f"no upstream hv_fcopy_uio_daemon at {UIO_DAEMON}: scripts/setup builds it"
                    " from Debian's linux-source-6.12 (or set HVGUEST_UIO_REFERENCE)")
    return os.path.realpath(UIO_DAEMON)


def test_upstream_uio_daemon_receives_a_file(tmp_path: str) -> None:
    src = os.path.join(tmp_path, "u.bin")
    data = os.urandom(3 << 20)
    with open(src, "wb") as f:
        f.write(data)
    with SimClient.start([uio_reference(), "-n"], services=("fcopy",), fcopy="uio",
                         network=False, workdir=os.path.join(tmp_path, "sim")) as sim:
        assert sim.fcopy_send(src, "/tmp", "u.bin") == HV_S_OK
        assert _sha(sim, "/tmp/u.bin") == hashlib.sha256(data).hexdigest()
        # Upstream does not implement CANCEL.
        assert sim.fcopy_send(src, "/tmp", "c.bin", cancel_after_bytes=0) == HV_E_FAIL
