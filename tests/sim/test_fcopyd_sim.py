"""hvguest-fcopyd under the simulator: the host copies files through the kernel model
(legacy /dev/vmbus/hv_fcopy) or the UIO ring, the daemon runs in a sandbox whose
writes stay in a tmpfs (even onto /etc/passwd), and we read the results through
/proc/PID/root.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import time

import pytest

from hvguest.sim.client import SimClient
from hvguest.wire.fcopy import (
    CREATE_PATH,
    OVER_WRITE,
    FcopyCancel,
    FcopyComplete,
    FcopyStart,
    FcopyWrite,
)
from hvguest.wire.status import HvStatus

pytestmark = [pytest.mark.root, pytest.mark.fuse]

OK = HvStatus.HV_S_OK
FAIL = HvStatus.HV_E_FAIL
DAEMON = [sys.executable, "-m", "hvguest.daemons.fcopyd", "--log-target", "stderr"]
MIB = 1 << 20


def wait_registered(sim: SimClient) -> None:
    """The kernel fails every request until the daemon registered (legacy) or opened
    /dev/uio0 (UIO)."""
    if not sim.call("wait_registered"):
        raise AssertionError(f"the fcopy daemon did not register: {sim.state()}")


def start(tmp_path, mode: str, command=None) -> SimClient:
    sim = SimClient.start(
        command or DAEMON, services=("fcopy",), fcopy=mode, workdir=str(tmp_path / "sim")
    )
    try:
        wait_registered(sim)
    except BaseException:
        sim.close()
        raise
    return sim


def make_file(path, size: int) -> str:
    h = hashlib.sha256()
    chunk = os.urandom(MIB)
    with open(path, "wb") as f:
        left = size
        while left:
            piece = chunk[: min(left, MIB)]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
    return h.hexdigest()


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


def raw(sim: SimClient, mode: str, message) -> int:
    """A daemon-side message: UTF-8 names for legacy, UTF-16 for the host wire (UIO)."""
    data = message if isinstance(message, bytes) else message.encode(utf16=mode == "uio")
    return sim.fcopy_raw(data)


@pytest.fixture(params=["legacy", "uio"])
def mode(request):
    return request.param


@pytest.fixture
def sim(tmp_path, mode):
    # A simulator error (UIO included) is a failure, never a skip.
    with start(tmp_path, mode) as client:
        yield client


def copy_and_check(sim, tmp_path, size: int, dest: str = "/var/lib/hvguest/incoming"):
    src = tmp_path / "src.bin"
    digest = make_file(src, size)
    started = time.monotonic()
    assert sim.fcopy_send(str(src), f"{dest}/новый/目录", "файл 🎉.bin", CREATE_PATH) == OK
    elapsed = time.monotonic() - started
    final = f"{sim.root}{dest}/новый/目录/файл 🎉.bin"
    assert sha256_of(final) == digest
    assert (os.stat(final).st_mode & 0o7777) == 0o644
    assert sim.daemon_alive()
    return elapsed


def test_64mib_sha256(sim, tmp_path):
    copy_and_check(sim, tmp_path, 64 * MIB)


@pytest.mark.slow
def test_256mib_sha256(sim, tmp_path):
    copy_and_check(sim, tmp_path, 256 * MIB)


def test_path_traversal_refused_end_to_end(sim, tmp_path, mode):
    src = tmp_path / "evil"
    src.write_bytes(b"root::0:0::/root:/bin/sh\n")
    passwd = open(f"{sim.root}/etc/passwd", "rb").read()
    for dest, name in (("../../etc", "passwd"), ("/tmp/../etc", "passwd"), ("/etc", "passwd")):
        status = sim.fcopy_send(str(src), dest, name, OVER_WRITE | CREATE_PATH)
        assert status == FAIL, (dest, name)
        assert sim.daemon_alive()
    assert open(f"{sim.root}/etc/passwd", "rb").read() == passwd
    # A symlink planted in an allowed root is not followed.
    assert sim.exec(["ln", "-s", "/etc", "/tmp/etc-link"]).returncode == 0
    assert sim.fcopy_send(str(src), "/tmp/etc-link", "passwd", OVER_WRITE) == FAIL
    assert open(f"{sim.root}/etc/passwd", "rb").read() == passwd
    assert sim.fcopy_send(str(src), "/tmp", "fine", 0) == OK


def test_protocol_misuse_keeps_serving(sim, tmp_path, mode):
    incoming = "/var/lib/hvguest/incoming"
    assert raw(sim, mode, FcopyWrite(0, b"x")) == FAIL
    assert raw(sim, mode, FcopyComplete()) == FAIL
    # START twice: the first transfer is abandoned, the second completes.
    assert raw(sim, mode, FcopyStart("one", incoming, 0, 4)) == OK
    assert raw(sim, mode, FcopyWrite(0, b"1111")) == OK
    assert raw(sim, mode, FcopyStart("two", incoming, 0, 4)) == OK
    assert raw(sim, mode, FcopyWrite(0, b"2222")) == OK
    assert raw(sim, mode, FcopyComplete()) == OK
    # A size field larger than the payload.
    assert raw(sim, mode, FcopyStart("three", incoming, 0, 100)) == OK
    bad = bytearray(FcopyWrite(0, b"x" * 16).encode())
    struct.pack_into("<I", bad, 48, 10000)
    assert raw(sim, mode, bytes(bad)) == FAIL
    # A gap and a resend are accepted; a WRITE beyond file_size is not.
    assert raw(sim, mode, FcopyStart("four", incoming, 0, 100)) == OK
    assert raw(sim, mode, FcopyWrite(0, b"x" * 10)) == OK
    assert raw(sim, mode, FcopyWrite(50, b"x" * 10)) == OK
    assert raw(sim, mode, FcopyWrite(0, b"x" * 10)) == OK
    assert raw(sim, mode, FcopyWrite(95, b"x" * 10)) == FAIL
    assert raw(sim, mode, FcopyCancel()) == OK
    # Out of order with a hole, completed: holes read as zeros.
    assert raw(sim, mode, FcopyStart("five", incoming, 0, 20)) == OK
    assert raw(sim, mode, FcopyWrite(10, b"b" * 10)) == OK
    assert raw(sim, mode, FcopyWrite(0, b"a" * 5)) == OK
    assert raw(sim, mode, FcopyComplete()) == OK
    # Unknown operation.
    assert raw(sim, mode, struct.pack("<I", 42) + bytes(32)) == FAIL
    assert sorted(os.listdir(f"{sim.root}{incoming}")) == ["five", "two"]
    assert open(f"{sim.root}{incoming}/two", "rb").read() == b"2222"
    assert open(f"{sim.root}{incoming}/five", "rb").read() == b"a" * 5 + bytes(5) + b"b" * 10
    assert sim.daemon_alive()
    src = tmp_path / "after"
    src.write_bytes(b"after")
    assert sim.fcopy_send(str(src), incoming, "after") == OK


def test_cancel_mid_transfer_leaves_nothing(sim, tmp_path):
    src = tmp_path / "src.bin"
    make_file(src, 4 * MIB)
    status = sim.fcopy_send(
        str(src), "/tmp/cancelled", "f.bin", CREATE_PATH, cancel_after_bytes=MIB
    )
    assert status == OK  # the CANCEL itself succeeds
    assert os.listdir(f"{sim.root}/tmp/cancelled") == []
    assert sim.daemon_alive()


def test_already_exists_and_overwrite(sim, tmp_path):
    src = tmp_path / "new"
    src.write_bytes(b"new")
    assert sim.exec(["sh", "-c", "echo old > /tmp/exists"]).returncode == 0
    assert sim.fcopy_send(str(src), "/tmp", "exists", 0) == HvStatus.HV_ERROR_ALREADY_EXISTS
    assert open(f"{sim.root}/tmp/exists", "rb").read() == b"old\n"
    assert sim.fcopy_send(str(src), "/tmp", "exists", OVER_WRITE) == OK
    assert open(f"{sim.root}/tmp/exists", "rb").read() == b"new"


def test_daemon_restart_mid_transfer_leaves_nothing(sim, tmp_path, mode):
    assert raw(sim, mode, FcopyStart("half.bin", "/tmp", 0, 1 << 20)) == OK
    assert raw(sim, mode, FcopyWrite(0, b"x" * 6144)) == OK
    sim.restart_daemon()
    wait_registered(sim)
    assert not os.path.exists(f"{sim.root}/tmp/half.bin")
    leftovers = [n for n in os.listdir(f"{sim.root}/tmp") if n.startswith(".hvguest-fcopy.")]
    assert leftovers == []
    # The host's next request after the restart is the next copy.
    assert raw(sim, mode, FcopyWrite(6144, b"y" * 6144)) == FAIL
    src = tmp_path / "again"
    src.write_bytes(b"again")
    assert sim.fcopy_send(str(src), "/tmp", "half.bin") == OK


@pytest.mark.parametrize("mode", ["uio"])
def test_uio_negotiation_framing_and_short_bodies(sim, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(b"z" * 20000)
    assert sim.fcopy_send(str(src), "/tmp", "framed") == OK
    # Bodies too short for an fcopy header: the upstream UIO daemon exits; we answer.
    for body in (b"", b"\x01", b"\x01\x00\x00"):
        status, payload = sim.host_raw("fcopy", body)
        assert status == FAIL
        assert payload[25] == 5  # icflags TRANSACTION|RESPONSE
    assert sim.fcopy_send(str(src), "/tmp", "after-short") == OK
    transcript = sim.transcript()
    nego = transcript[0]
    assert nego["op"] == "negotiate" and nego["status"] == OK
    assert nego["fields"] == {"framework": "3.0", "service": "1.1"}
    # Every response carries the request's trans_id: the host numbers them 1, 2, ...
    assert [t["trans_id"] for t in transcript] == list(range(1, len(transcript) + 1))
    assert all(t["status"] is not None for t in transcript)


# -- UIO recovery: a rescinded or corrupted channel, a device that left ----------------


def wait_for(what: str, check, timeout: float = 30.0):
    """Poll a simulator state until ``check()`` is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


def daemon_output(tmp_path) -> str:
    with open(tmp_path / "sim" / "sim.stderr", errors="replace") as f:
        return f.read()


@pytest.mark.parametrize("mode", ["uio"])
def test_uio_rescind_with_node_present_backs_off(sim, tmp_path):
    before = sim.uio_stats()["open_attempts"]
    sim.uio_rescind(node_opens=True)
    # Every re-open succeeds and fails at once. Back-off 0.1 s doubling: the first
    # six seconds hold at most 6 re-opens (0.1 + 0.2 + ... + 3.2 = 6.3 s); a loop
    # without back-off re-opens hundreds of times a second.
    wait_for("a first re-open", lambda: sim.uio_stats()["open_attempts"] > before)
    first = time.monotonic()
    time.sleep(6.0)  # a measurement window, not a state check: count what happened
    window = time.monotonic() - first
    reopens = sim.uio_stats()["open_attempts"] - before
    assert 2 <= reopens <= 7, (reopens, window)
    assert sim.daemon_alive()


@pytest.mark.parametrize("mode", ["uio"])
@pytest.mark.parametrize("what", ["rx_read", "rx_write", "tx_full"])
def test_uio_corrupt_ring_is_abandoned_and_the_next_copy_succeeds(sim, tmp_path, what):
    src = tmp_path / "before"
    src.write_bytes(b"b" * 10000)
    assert sim.fcopy_send(str(src), "/tmp", "before") == OK
    assert sim.uio_stats()["connects"] == 1
    # The daemon may still be re-arming after the last reply (a signal makes the
    # host read TX, which would see the corruption and skip it): corrupt only once
    # it waits for the next interrupt.
    wait_for("the daemon waiting for an interrupt", lambda: sim.uio_stats()["guest_idle"])
    seen = sim.uio_corrupt(what)
    if what == "tx_full":
        # The host's next request finds the daemon unable to answer: that request
        # is lost with the channel (the host times it out and retries).
        sim.fcopy_raw(FcopyCancel().encode(utf16=True))
    wait_for("the channel reconnected", lambda: sim.uio_stats()["connects"] >= 2)
    src = tmp_path / "after"
    src.write_bytes(os.urandom(50000))
    assert sim.fcopy_send(str(src), "/tmp", "after") == OK
    assert open(f"{sim.root}/tmp/after", "rb").read() == src.read_bytes()
    assert sim.daemon_alive()
    assert sim.uio_stats()["connects"] == 2  # one recovery, not a loop
    # Fresh rings: the host negotiated again, and the daemon answered it.
    negotiations = [t for t in sim.transcript() if t["op"] == "negotiate"]
    assert [t["status"] for t in negotiations] == [OK, OK], negotiations
    # Logged once, with the values the daemon saw.
    log = daemon_output(tmp_path)
    lines = [line for line in log.splitlines() if "abandoning the ring" in line]
    assert len(lines) == 1, log[-3000:]
    if what == "tx_full":
        assert f"read_index {seen['read_index']}" in lines[0], lines
    else:
        field = "read_index" if what == "rx_read" else "write_index"
        assert f"{field} {seen[field]}" in lines[0], lines


@pytest.mark.parametrize("mode", ["uio"])
def test_uio_device_gone_from_sysfs_exits_0(sim):
    """Nothing left to serve is not a failure: exit 0, as hvguest-vssd does. (The
    simulator's legacy device keeps its node after a module unload, so the legacy
    half of this rule is checked by the rootless tests.)"""
    sim.uio_remove()
    wait_for("the daemon to exit", lambda: not sim.daemon_alive())
    assert sim.daemon_exits() == [0]


def test_uio_unbound_device_waits_for_the_bind_helper(tmp_path):
    """The daemon never binds: with the device unbound it says so and waits; once
    hvguest-uio-bind (run as root by the unit's ExecStartPre=+) has bound it, the
    daemon opens the channel on its next attempt and copies."""
    with SimClient.start(DAEMON, services=("fcopy",), fcopy="uio", uio_bound=False,
                         workdir=str(tmp_path / "sim"), wait_registered=False) as sim:
        wait_for("the daemon to report the unbound device",
                 lambda: "not bound to uio_hv_generic" in daemon_output(tmp_path))
        assert sim.daemon_alive()
        assert sim.exec(["cat", "/sys/bus/vmbus/drivers/uio_hv_generic/new_id"]).stdout == b""
        assert sim.uio_stats()["connects"] == 0
        bind = sim.exec([sys.executable, "-I", "-m", "hvguest.transport.uio_bind"])
        assert bind.returncode == 0, bind.stderr
        assert b"bound to uio_hv_generic" in bind.stdout
        wait_registered(sim)
        src = tmp_path / "bound"
        src.write_bytes(b"bound")
        assert sim.fcopy_send(str(src), "/tmp", "bound") == OK
        # Not bound is said once per period, not once per attempt.
        said = daemon_output(tmp_path).count("not bound to uio_hv_generic")
        assert said == 1, daemon_output(tmp_path)[-3000:]
