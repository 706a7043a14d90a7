"""FuseDeviceServer: simulated devices served over /dev/fuse to a client in a Sandbox."""

from __future__ import annotations

import errno
import json
import mmap
import os
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvguest.sim.device import POLLIN, POLLRDNORM, WOULD_BLOCK
from hvguest.sim.fuse import FuseDeviceServer
from hvguest.sim.sandbox import Sandbox, SandboxError, SandboxSpec

pytestmark = [pytest.mark.root, pytest.mark.fuse]


class EchoDevice:
    """Queues what is written and returns it on read; one opener at a time."""

    name = "hv_echo"

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.writes: list[bytes] = []
        self.opener: int | None = None
        self.blocked_reads = 0
        self.polls = 0
        self.waker: Callable[[], None] = lambda: None

    def open(self, handle: int) -> int:
        if self.opener is not None:
            return -errno.EBUSY
        self.opener = handle
        return 0

    def read(self, handle: int, size: int) -> bytes | int:
        if not self.queue:
            self.blocked_reads += 1
            return WOULD_BLOCK
        if len(self.queue[0]) > size:
            return -errno.EINVAL
        return self.queue.pop(0)

    def write(self, handle: int, data: bytes) -> int:
        self.writes.append(data)
        self.queue.append(data)
        self.waker()
        return len(data)

    def poll(self, handle: int) -> int:
        self.polls += 1
        return POLLIN | POLLRDNORM if self.queue else 0

    def release(self, handle: int) -> None:
        if self.opener == handle:
            self.opener = None

    def set_waker(self, waker: Callable[[], None]) -> None:
        self.waker = waker

    def push(self, data: bytes) -> None:
        """The host side queues a message."""
        self.queue.append(data)
        self.waker()


@pytest.fixture
def echo() -> Iterator[tuple[EchoDevice, FuseDeviceServer]]:
    dev = EchoDevice()
    server = FuseDeviceServer({"hv_echo": dev})
    yield dev, server
    server.close()


def run_client(tmp_path: Path, mounts: list[tuple[FuseDeviceServer, str]], code: str) -> Sandbox:
    out = tmp_path / "client.out"
    sb = Sandbox(SandboxSpec(command=[sys.executable, "-c", code], fuse_mounts=mounts,
                             stdout=str(out), stderr=str(out)))
    sb.start()
    return sb


def finish(sb: Sandbox, tmp_path: Path, timeout: float = 15) -> list[object]:
    try:
        rc = sb.wait(timeout)
    finally:
        sb.stop()
    text = (tmp_path / "client.out").read_text()
    assert rc == 0, text
    return [json.loads(line) for line in text.splitlines()]


def serve_until(sb: Sandbox, cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert sb.alive(), "client exited early"
        assert time.monotonic() < deadline, "condition not reached"
        sb.serve(0.01)


CLIENT_BASIC = r"""
import errno, json, os, select, stat
def out(x): print(json.dumps(x), flush=True)
out(sorted(os.listdir("/dev/vmbus")))
st = os.stat("/dev/vmbus/hv_echo")
out([stat.S_ISREG(st.st_mode), oct(st.st_mode & 0o777)])
try:
    os.open("/dev/vmbus/missing", os.O_RDWR)
except OSError as e:
    out(errno.errorcode[e.errno])
fd = os.open("/dev/vmbus/hv_echo", os.O_RDWR)
try:
    os.open("/dev/vmbus/hv_echo", os.O_RDWR)
except OSError as e:
    out(errno.errorcode[e.errno])
p = select.poll()
p.register(fd, select.POLLIN)
out(p.poll(0))
out(os.write(fd, b"hello"))
out([ev for _, ev in p.poll(2000)])
out(os.read(fd, 100).decode())
os.write(fd, b"x" * 50)
try:
    os.read(fd, 10)
except OSError as e:
    out(errno.errorcode[e.errno])
out(os.pread(fd, 100, 0).decode())
out(os.write(fd, b""))
os.close(fd)
for _ in range(200):  # RELEASE is asynchronous
    try:
        fd = os.open("/dev/vmbus/hv_echo", os.O_WRONLY | os.O_TRUNC)
        break
    except OSError as e:
        assert e.errno == errno.EBUSY
        import time; time.sleep(0.01)
out("reopened")
os.close(fd)
"""


def test_open_poll_read_write_and_exclusive_open(
    echo: tuple[EchoDevice, FuseDeviceServer], tmp_path: Path
) -> None:
    dev, server = echo
    sb = run_client(tmp_path, [(server, "/dev/vmbus")], CLIENT_BASIC)
    results = finish(sb, tmp_path)
    assert results == [
        ["hv_echo"],
        [True, "0o600"],
        "ENOENT",
        "EBUSY",
        [],
        5,
        [POLLIN],
        "hello",
        "EINVAL",  # message longer than the read: stays queued, like the kernel
        "x" * 50,
        0,  # a 0-byte write never reaches the device
        "reopened",
    ]
    assert dev.writes == [b"hello", b"x" * 50]


CLIENT_BLOCK = r"""
import json, os, select
# O_NONBLOCK is not honoured by the misc devices: reads still block
fd = os.open("/dev/vmbus/hv_echo", os.O_RDWR | os.O_NONBLOCK)
if USE_EPOLL:
    p = select.epoll()
    p.register(fd, select.EPOLLIN)
    print(json.dumps([ev for _, ev in p.poll(-1)]), flush=True)
else:
    p = select.poll()
    p.register(fd, select.POLLIN)
    print(json.dumps([ev for _, ev in p.poll(-1)]), flush=True)
print(json.dumps(os.read(fd, 100).decode()), flush=True)
print(json.dumps(os.read(fd, 100).decode()), flush=True)
"""


@pytest.mark.parametrize("use_epoll", [False, True], ids=["poll", "epoll"])
def test_poll_notify_and_blocked_read_woken_from_parent(
    echo: tuple[EchoDevice, FuseDeviceServer], tmp_path: Path, use_epoll: bool
) -> None:
    dev, server = echo
    code = f"USE_EPOLL = {use_epoll}\n" + CLIENT_BLOCK
    sb = run_client(tmp_path, [(server, "/dev/vmbus")], code)
    serve_until(sb, lambda: dev.polls > 0)
    sb.serve(0.2)
    assert sb.alive()  # still waiting in poll(): nothing queued
    dev.push(b"first")  # the waker sends FUSE_NOTIFY_POLL
    serve_until(sb, lambda: dev.blocked_reads > 0)  # second read() is parked
    sb.serve(0.2)
    assert sb.alive()
    dev.push(b"second")
    assert finish(sb, tmp_path) == [[POLLIN], "first", "second"]


CLIENT_INTERRUPT = r"""
import ctypes, errno, json, os, signal
signal.signal(signal.SIGUSR1, lambda *a: None)
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/dev/vmbus/hv_echo", os.O_RDWR)
buf = ctypes.create_string_buffer(100)
rc = libc.read(fd, buf, 100)
print(json.dumps([rc, errno.errorcode.get(ctypes.get_errno())]), flush=True)
"""


def test_signal_interrupts_blocked_read_with_eintr(
    echo: tuple[EchoDevice, FuseDeviceServer], tmp_path: Path
) -> None:
    dev, server = echo
    sb = run_client(tmp_path, [(server, "/dev/vmbus")], CLIENT_INTERRUPT)
    serve_until(sb, lambda: dev.blocked_reads > 0)
    sb.signal(signal.SIGUSR1)
    assert finish(sb, tmp_path) == [[-1, "EINTR"]]


def test_killed_client_with_blocked_read_goes_away(
    echo: tuple[EchoDevice, FuseDeviceServer], tmp_path: Path
) -> None:
    dev, server = echo
    sb = run_client(tmp_path, [(server, "/dev/vmbus")], CLIENT_INTERRUPT)
    serve_until(sb, lambda: dev.blocked_reads > 0)
    sb.signal(signal.SIGKILL)
    assert sb.wait(5) == -signal.SIGKILL
    sb.stop()
    serve_deadline = time.monotonic() + 5
    while dev.opener is not None and time.monotonic() < serve_deadline:
        sb.serve(0.02)
    assert dev.opener is None  # RELEASE arrived


class CounterDevice:
    """uio-like: 4-byte writes are recorded, reads return queued 4-byte counts."""

    name = "uio0"
    honours_nonblock = True  # like uio: O_NONBLOCK reads fail with EAGAIN

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.counts: list[int] = []
        self.polls = 0
        self.waker: Callable[[], None] = lambda: None

    def open(self, handle: int) -> int:
        return 0

    def read(self, handle: int, size: int) -> bytes | int:
        if size != 4:
            return -errno.EINVAL
        return struct.pack("<I", self.counts.pop(0)) if self.counts else WOULD_BLOCK

    def write(self, handle: int, data: bytes) -> int:
        if len(data) != 4:
            return -errno.EINVAL
        self.writes.append(data)
        return 4

    def poll(self, handle: int) -> int:
        self.polls += 1
        return POLLIN | POLLRDNORM if self.counts else 0

    def release(self, handle: int) -> None:
        pass

    def set_waker(self, waker: Callable[[], None]) -> None:
        self.waker = waker


RING = 0xA000

CLIENT_RING = r"""
import json, mmap, os, select, struct
fd = os.open("/dev/uio0", os.O_RDWR)
m = mmap.mmap(fd, 0xA000, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[0:5] = b"guest"
nb = os.open("/dev/uio0", os.O_RDWR | os.O_NONBLOCK)
try:
    os.read(nb, 4)
except BlockingIOError:
    print(json.dumps("EAGAIN"), flush=True)
os.close(nb)
p = select.poll()
p.register(fd, select.POLLIN)
print(json.dumps(p.poll(0)), flush=True)
os.write(fd, struct.pack("<I", 1))
count = struct.unpack("<I", os.read(fd, 4))[0]
print(json.dumps([count, m[0x5000:0x5004].decode(), os.fstat(fd).st_size]), flush=True)
"""


def test_passthrough_mmap_shares_memory_while_io_reaches_device(tmp_path: Path) -> None:
    backing_dir = Path("/dev/shm") / f"hvguest-test-{os.getpid()}"
    backing_dir.mkdir()
    ring = backing_dir / "ring"
    ring.write_bytes(b"\0" * RING)
    dev = CounterDevice()
    server = FuseDeviceServer({"uio0": dev}, passthrough={"uio0": str(ring)})
    try:
        with open(ring, "r+b") as f:
            host = mmap.mmap(f.fileno(), RING)
        sb = run_client(tmp_path, [(server, "/dev/uio0")], CLIENT_RING)
        serve_until(sb, lambda: bool(dev.writes))
        assert dev.writes == [struct.pack("<I", 1)]
        assert dev.polls > 0  # poll() reaches the device despite passthrough
        assert host[0:5] == b"guest"  # the guest's store, seen through the host's map
        host[0x5000:0x5004] = b"host"
        dev.counts.append(7)
        dev.waker()
        assert finish(sb, tmp_path) == ["EAGAIN", [], [7, "host", RING]]
        host.close()
    finally:
        server.close()
        ring.unlink()
        backing_dir.rmdir()


def test_passthrough_name_needs_a_device() -> None:
    with pytest.raises(ValueError):
        FuseDeviceServer({}, passthrough={"uio0": "/nonexistent"})


def test_process_before_mount_does_not_block(echo: tuple[EchoDevice, FuseDeviceServer]) -> None:
    _dev, server = echo
    t = time.monotonic()
    server.process()
    assert time.monotonic() - t < 1
    assert f"fd={server.fileno()}," in server.mount_options()
    assert os.get_inheritable(server.fileno())


@pytest.mark.reference
def test_reference_kvp_daemon_registers_and_polls() -> None:
    """The unmodified C daemon opens /dev/vmbus/hv_kvp, writes its registration, reads
    the (echoed) answer and then waits in poll() on the FUSE file."""
    dev = EchoDevice()
    kvp = FuseDeviceServer({"hv_kvp": dev})
    try:
        sb = Sandbox(SandboxSpec(command=["/usr/sbin/hv_kvp_daemon", "-n"],
                                 fuse_mounts=[(kvp, "/dev/vmbus")], network=True))
        sb.start()
        try:
            serve_until(sb, lambda: dev.polls > 0 and not dev.queue)
            assert [len(w) for w in dev.writes] == [7432]  # one whole hv_kvp_msg
            assert any("KVP LIC Version" in line for line in sb.syslog())
            fd_dir = f"/proc/{sb.pid}/fd"
            assert "/dev/vmbus/hv_kvp" in [os.readlink(f"{fd_dir}/{n}") for n in os.listdir(fd_dir)]
            assert sb.read_file("/var/lib/hyperv/.kvp_pool_0") == b""
        finally:
            assert sb.stop() == -signal.SIGTERM
        deadline = time.monotonic() + 5
        while dev.opener is not None and time.monotonic() < deadline:
            sb.serve(0.02)
        assert dev.opener is None  # the daemon's close reached the device
    finally:
        kvp.close()


def test_server_reports_disconnect_after_the_sandbox_ends(
    echo: tuple[EchoDevice, FuseDeviceServer], tmp_path: Path
) -> None:
    _dev, server = echo
    sb = run_client(tmp_path, [(server, "/dev/vmbus")], "print(1)")
    assert finish(sb, tmp_path) == [1]
    deadline = time.monotonic() + 5
    while not server.disconnected and time.monotonic() < deadline:
        server.process()
        time.sleep(0.01)
    assert server.disconnected
    with pytest.raises(SandboxError, match="single mount"):
        Sandbox(SandboxSpec(command=["true"], fuse_mounts=[(server, "/dev/vmbus")])).start()
