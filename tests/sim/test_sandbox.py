"""Sandbox: isolation of the command under test from the machine, and clean teardown."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvguest.sim.device import POLLIN, POLLRDNORM, WOULD_BLOCK
from hvguest.sim.fuse import FuseDeviceServer
from hvguest.sim.netns import SetupError, check_mounts
from hvguest.sim.sandbox import (
    LoopFs,
    Sandbox,
    SandboxError,
    SandboxSpec,
    SysBind,
    SysDir,
    SysLink,
)


def losetup_list() -> str:
    return subprocess.run(["losetup", "-a"], capture_output=True, text=True, timeout=10).stdout


def host_mounts() -> str:
    return Path("/proc/mounts").read_text()


@pytest.fixture(scope="module")
def ext4_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts, loop devices)")
    image = tmp_path_factory.mktemp("img") / "ext4.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
    return image


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    path = Path("/dev/shm") / f"hvguest-test-{os.getpid()}"
    path.mkdir()
    yield path
    shutil.rmtree(path)


@pytest.fixture
def sleeper() -> Iterator[Sandbox]:
    sb = Sandbox(SandboxSpec(command=["sleep", "60"]))
    sb.start()
    yield sb
    sb.stop()


@pytest.mark.root
def test_writes_stay_inside(sleeper: Sandbox) -> None:
    before = Path("/etc/passwd").read_bytes()
    done = sleeper.exec(["sh", "-c", "echo intruder:x:0:0::/:/bin/sh >> /etc/passwd; "
                         "mkdir -p /var/lib/hyperv; echo pool > /var/lib/hyperv/.kvp_pool_1; "
                         "cat /etc/../etc/passwd | tail -1"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"intruder:")
    assert Path("/etc/passwd").read_bytes() == before
    assert Path(sleeper.root, "var/lib/hyperv/.kvp_pool_1").read_text() == "pool\n"
    assert sleeper.read_file("/var/lib/hyperv/.kvp_pool_1") == b"pool\n"
    assert not Path("/var/lib/hyperv/.kvp_pool_1").exists() or \
        Path("/var/lib/hyperv/.kvp_pool_1").read_text() != "pool\n"


@pytest.mark.root
def test_fresh_dev_run_hostname_and_syslog(sleeper: Sandbox) -> None:
    done = sleeper.exec(["sh", "-c", "ls /dev; hostname; stat -c %F /dev/null; "
                         "findmnt -n -o FSTYPE /run; logger -t probe hello there"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().split()
    for node in ("null", "zero", "urandom", "tty", "log", "shm"):
        assert node in lines
    assert "hvguest-sim" in lines
    assert "tmpfs" in lines[-1]
    deadline = time.monotonic() + 5
    while not any("hello there" in m for m in sleeper.syslog()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert any("probe" in m and "hello there" in m for m in sleeper.syslog())


@pytest.mark.root
def test_exec_input_timeout_and_failures(sleeper: Sandbox) -> None:
    done = sleeper.exec(["cat"], input=b"x" * 200_000)
    assert done.stdout == b"x" * 200_000
    assert sleeper.exec(["sh", "-c", "exit 3"]).returncode == 3
    t = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        sleeper.exec(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - t < 5


@pytest.mark.root
def test_exec_and_spawn_after_the_command_exited() -> None:
    with Sandbox(SandboxSpec(command=["sh", "-c", "echo kept > /run/state"])) as sb:
        assert sb.wait(10) == 0
        assert sb.read_file("/run/state") == b"kept\n"  # namespaces outlive the command
        assert sb.poll() == 0
        proc = sb.spawn(["sleep", "60"])
        assert sb.exec(["cat", "/run/state"]).stdout == b"kept\n"
    assert proc.poll() == -signal.SIGTERM  # stop() ends spawned commands too


@pytest.mark.root
def test_command_that_cannot_start_is_reported() -> None:
    sb = Sandbox(SandboxSpec(command=["/nonexistent/daemon"]))
    with pytest.raises(SandboxError, match="nonexistent"):
        sb.start()
    sb.stop()


@pytest.mark.root
def test_network_is_fixed_and_private() -> None:
    host_links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    with Sandbox(SandboxSpec(command=["sleep", "60"], network=True)) as sb:
        addr = sb.exec(["ip", "-br", "addr", "show", "eth0"]).stdout.decode()
        assert "192.0.2.10/24" in addr and "2001:db8::10/64" in addr
        assert "tentative" not in sb.exec(["ip", "addr"]).stdout.decode()
        assert sb.read_file("/sys/class/net/eth0/address") == b"00:15:5d:00:00:01\n"
        routes = sb.exec(["ip", "route"]).stdout.decode()
        assert "default via 192.0.2.1 dev eth0" in routes
        assert "default via 2001:db8::1" in sb.exec(["ip", "-6", "route"]).stdout.decode()
        assert sb.read_file("/etc/resolv.conf") == b"nameserver 192.0.2.53\n"
        links = sb.exec(["ip", "-br", "link"]).stdout.decode().split("\n")
        assert sorted(ln.split()[0] for ln in links if ln) == ["eth0@if2", "lo"]
    assert subprocess.run(["ip", "-br", "link"], capture_output=True,
                          text=True).stdout == host_links


@pytest.mark.root
def test_fake_sysfs_entries_next_to_real_ones(shm_dir: Path) -> None:
    ring = shm_dir / "ring"
    ring.write_bytes(b"\0" * 0xA000)
    fake: dict[str, str | bytes | SysLink | SysDir | SysBind] = {
        "bus/vmbus/devices/dev0/channels/15/ring": SysBind(str(ring)),
        "bus/vmbus/devices/dev0/class_id": "{34d14be3-dee4-41c8-9ae7-6b174977c192}\n",
        "bus/vmbus/devices/dev0/channels/14/ring": b"\0" * 16,
        "bus/vmbus/drivers/uio_hv_generic/new_id": "",
        "class/misc/vmbus!hv_kvp/dev": "10:123\n",
        "bus/vmbus/devices/dev0/uio/uio0": SysDir(),
        "class/uio/uio0": SysLink("../../bus/vmbus/devices/dev0/uio/uio0"),
    }
    with Sandbox(SandboxSpec(command=["sleep", "60"], fake_sys=fake, network=True)) as sb:
        assert sb.read_file("/sys/bus/vmbus/devices/dev0/class_id").startswith(b"{34d14be3")
        assert os.path.getsize(f"{sb.root}/sys/bus/vmbus/devices/dev0/channels/14/ring") == 16
        assert os.path.isdir(f"{sb.root}/sys/class/uio/uio0")
        ring_inside = "/sys/bus/vmbus/devices/dev0/channels/15/ring"
        assert sb.exec(["stat", "-c", "%s", ring_inside]).stdout == b"40960\n"
        done = sb.exec(["sh", "-c", f"printf ring | dd of={ring_inside} conv=notrunc"])
        assert done.returncode == 0, done.stderr
        assert ring.read_bytes()[:4] == b"ring"  # the same file, not a copy
        done = sb.exec(["sh", "-c", "echo 1 2 > /sys/bus/vmbus/drivers/uio_hv_generic/new_id"])
        assert done.returncode == 0, done.stderr
        assert sb.read_file("/sys/bus/vmbus/drivers/uio_hv_generic/new_id") == b"1 2\n"
        # real entries are still there, from the sandbox's own network namespace
        assert os.path.isdir(f"{sb.root}/sys/bus/cpu/devices")
        misc = os.listdir(f"{sb.root}/sys/class/misc")
        assert "vmbus!hv_kvp" in misc and "fuse" in misc  # grafted one level deeper
        assert sb.read_file("/sys/class/misc/vmbus!hv_kvp/dev") == b"10:123\n"
        assert sorted(os.listdir(f"{sb.root}/sys/class/net")) == ["eth0", "lo"]
    assert not os.path.exists("/sys/bus/vmbus/devices/dev0")


@pytest.mark.root
def test_loop_fs_inside_only_and_frozen_fs_cleaned_up(ext4_image: Path) -> None:
    spec = SandboxSpec(command=["sleep", "60"],
                       loop_filesystems=[LoopFs(str(ext4_image), "ext4", "/mnt/hvtest")])
    sb = Sandbox(spec)
    sb.start()
    try:
        (dev,) = sb.loop_devices
        assert str(ext4_image) in losetup_list()
        mounts = sb.exec(["cat", "/proc/mounts"]).stdout.decode()
        assert f"{dev} /mnt/hvtest ext4 rw" in mounts
        assert sb.exec(["sh", "-c", "echo data > /mnt/hvtest/file"]).returncode == 0
        assert sb.read_file("/mnt/hvtest/file") == b"data\n"
        assert "/mnt/hvtest" not in host_mounts()
        assert not os.path.exists("/mnt/hvtest/file")
        # the reference VSS daemon must see the loop device as a plain disk
        assert sb.exec(["ls", "/sys/dev/block"]).stdout == b""
        assert sb.exec(["fsfreeze", "--freeze", "/mnt/hvtest"]).returncode == 0
        with pytest.raises(subprocess.TimeoutExpired):
            sb.exec(["sh", "-c", "echo more > /mnt/hvtest/file2; sync"], timeout=0.5)
    finally:
        sb.stop()  # thaws, ends the blocked writer, unmounts, detaches
    assert str(ext4_image) not in losetup_list()
    assert "hvtest" not in host_mounts()


def test_refuses_rw_dev_mounts_other_than_test_loops(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("overlay / overlay rw 0 0\n/dev/loop3 /mnt/a ext4 rw,relatime 0 0\n"
                      "/dev/vdb /data ext4 ro 0 0\n")
    check_mounts(["/dev/loop3"], str(mounts))
    mounts.write_text(mounts.read_text() + "/dev/vda /real ext4 rw,relatime 0 0\n")
    with pytest.raises(SetupError, match="/dev/vda"):
        check_mounts(["/dev/loop3"], str(mounts))


@pytest.mark.root
def test_stop_leaves_nothing_behind(ext4_image: Path, tmp_path: Path) -> None:
    mounts_before = host_mounts()
    spec = SandboxSpec(command=["sh", "-c", "trap '' TERM; sleep 60 & sleep 60 & wait"],
                       loop_filesystems=[LoopFs(str(ext4_image), "ext4", "/mnt/hvtest")],
                       network=True, workdir=str(tmp_path))
    sb = Sandbox(spec)
    sb.start()
    pid = sb.pid
    mnt_ns = os.stat(f"/proc/{pid}/ns/mnt").st_ino
    time.sleep(0.2)
    t = time.monotonic()
    rc = sb.stop(timeout=0.5)  # ignores SIGTERM: SIGKILL after 0.5 s
    assert time.monotonic() - t < 10
    assert rc == -signal.SIGKILL
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/mnt").st_ino == mnt_ns:
                    left.append(entry)
            except OSError:
                pass
    assert left == []
    assert str(ext4_image) not in losetup_list()
    assert host_mounts() == mounts_before
    assert os.listdir(tmp_path) == []


class VssDevice:
    """Just enough of hv_snapshot for the reference daemon: version reply, queued ops."""

    name = "hv_vss"

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.replies: list[bytes] = []
        self.waker: Callable[[], None] = lambda: None

    def open(self, handle: int) -> int:
        return 0

    def read(self, handle: int, size: int) -> bytes | int:
        return self.queue.pop(0) if self.queue else WOULD_BLOCK

    def write(self, handle: int, data: bytes) -> int:
        if data[0] == 129 and not self.replies:  # REGISTER1: the kernel answers 129
            self.queue.append(struct.pack("<I", 129))
            self.replies.append(b"registered")
            self.waker()
        else:
            self.replies.append(data)
        return len(data)

    def poll(self, handle: int) -> int:
        return POLLIN | POLLRDNORM if self.queue else 0

    def release(self, handle: int) -> None:
        pass

    def set_waker(self, waker: Callable[[], None]) -> None:
        self.waker = waker

    def send(self, op: int) -> None:
        self.queue.append(bytes([op]) + b"\0" * 11)
        self.waker()


@pytest.mark.root
@pytest.mark.fuse
@pytest.mark.reference
def test_reference_vss_daemon_freezes_only_test_loops(
    ext4_image: Path, tmp_path: Path
) -> None:
    second = tmp_path / "second.img"
    shutil.copyfile(ext4_image, second)
    dev = VssDevice()
    server = FuseDeviceServer({"hv_vss": dev})
    spec = SandboxSpec(command=["/usr/sbin/hv_vss_daemon", "-n"],
                       fuse_mounts=[(server, "/dev/vmbus")],
                       loop_filesystems=[LoopFs(str(ext4_image), "ext4", "/mnt/a"),
                                         LoopFs(str(second), "ext4", "/mnt/b")])
    sb = Sandbox(spec)
    try:
        sb.start()
        wait_for(sb, lambda: dev.replies == [b"registered"] and not dev.queue)
        dev.send(5)  # FREEZE
        wait_for(sb, lambda: len(dev.replies) == 2)
        assert dev.replies[1][:4] == b"\0\0\0\0"  # success
        for mnt in ("/mnt/a", "/mnt/b"):
            busy = sb.exec(["fsfreeze", "--freeze", mnt])  # EBUSY: already frozen
            assert busy.returncode != 0 and b"busy" in busy.stderr.lower()
        dev.send(6)  # THAW
        wait_for(sb, lambda: len(dev.replies) == 3)
        assert dev.replies[2][:4] == b"\0\0\0\0"
        assert sb.exec(["sh", "-c", "echo x > /mnt/a/f && echo x > /mnt/b/f"],
                       timeout=5).returncode == 0
    finally:
        sb.stop()
        server.close()
    assert str(second) not in losetup_list()


def wait_for(sb: Sandbox, cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert sb.alive(), sb.syslog()
        assert time.monotonic() < deadline, sb.syslog()
        sb.serve(0.01)
