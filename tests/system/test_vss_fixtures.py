"""Helpers for the VSS system tests: loop filesystems in a private mount namespace.

Safety: every scenario runs in a forked child that unshared its mount namespace
and made all mounts private, so the loop mounts exist only there. Engines and
daemons under test get a fake proc root whose mountinfo lists only the test's own
loop mounts, and ``assert_only_test_loops`` refuses a plan naming anything else.
Every freeze is undone in a finally path; loops are detached at the end.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


def run(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


CLONE_NEWNS = 0x00020000


def unshare_mount_ns() -> None:
    """unshare(CLONE_NEWNS) (os.unshare is Python >= 3.12)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_private_ns(func: Callable[[], Any], timeout: float = 240.0) -> Any:
    """Run ``func`` in a forked child with a private mount namespace; return its
    result or re-raise its exception (with the child's traceback as the message)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        code = 0
        try:
            unshare_mount_ns()
            run("mount", "--make-rprivate", "/")
            payload = pickle.dumps(("ok", func()))
        except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
            code = 1
            payload = pickle.dumps(
                ("err", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            )
        with os.fdopen(wfd, "wb") as f:
            f.write(payload)
        os._exit(code)
    os.close(wfd)
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(rfd, "rb") as f:
        os.set_blocking(f.fileno(), True)
        chunks.append(f.read())
    remaining = max(1.0, deadline - time.monotonic())
    end = time.monotonic() + remaining
    while True:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.05)
    data = b"".join(chunks)
    if not data:
        raise AssertionError("scenario child died without a result")
    kind, value = pickle.loads(data)
    if kind == "err":
        raise AssertionError(f"scenario failed in the child:\n{value}")
    return value


@dataclass
class LoopFs:
    image: str
    mountpoint: str
    fstype: str
    device: str = ""


@dataclass
class LoopSet:
    """Loop filesystems made and mounted by one scenario; undone by ``cleanup()``."""

    base: str
    mounted: list[LoopFs] = field(default_factory=list)

    def make(
        self,
        name: str,
        fstype: str = "ext4",
        size_mb: int = 64,
        parent: str | None = None,
        opts: str = "",
    ) -> LoopFs:
        """Create an image (under ``parent`` if given: a loop-on-loop) and mount it."""
        holder = parent or self.base
        image = os.path.join(holder, f"{name}.img")
        mountpoint = os.path.join(self.base, "mnt", name)
        os.makedirs(mountpoint, exist_ok=True)
        if fstype == "xfs":
            size_mb = max(size_mb, 320)
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        mkfs = {
            "ext4": ["mkfs.ext4", "-q", "-F"],
            "xfs": ["mkfs.xfs", "-q", "-f"],
            "vfat": ["mkfs.vfat"],
        }[fstype]
        run(*mkfs, image)
        device = run("losetup", "--find", "--show", image).stdout.strip()
        fs = LoopFs(image, mountpoint, fstype, device)
        self.mounted.append(fs)  # detached at cleanup even if the mount fails
        args = ["mount", "-t", fstype]
        if opts:
            args += ["-o", opts]
        run(*args, device, mountpoint)
        return fs

    def make_from_image(self, name: str, image: str, fstype: str = "ext4") -> LoopFs:
        """Mount an existing image (e.g. a snapshot copy)."""
        mountpoint = os.path.join(self.base, "mnt", name)
        os.makedirs(mountpoint, exist_ok=True)
        device = run("losetup", "--find", "--show", image).stdout.strip()
        fs = LoopFs(image, mountpoint, fstype, device)
        self.mounted.append(fs)
        run("mount", "-t", fstype, device, mountpoint)
        return fs

    def tmpfs(self, name: str) -> str:
        target = os.path.join(self.base, "mnt", name)
        os.makedirs(target, exist_ok=True)
        run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", target)
        self.mounted.append(LoopFs("", target, "tmpfs"))
        return target

    def bind(self, source: str, name: str) -> str:
        target = os.path.join(self.base, "mnt", name)
        os.makedirs(target, exist_ok=True)
        run("mount", "--bind", source, target)
        self.mounted.append(LoopFs("", target, "bind"))
        return target

    def fake_proc(self) -> str:
        """A proc root whose self/mountinfo lists only this scenario's mounts."""
        root = os.path.join(self.base, "proc")
        os.makedirs(os.path.join(root, "self"), exist_ok=True)
        ours = {fs.mountpoint for fs in self.mounted}
        with open("/proc/self/mountinfo") as f:
            lines = [ln for ln in f if ln.split(" ")[4] in ours]
        with open(os.path.join(root, "self", "mountinfo"), "w") as f:
            f.writelines(lines)
        return root

    def cleanup(self) -> None:
        for fs in reversed(self.mounted):
            if fs.fstype not in ("bind", "tmpfs"):
                with contextlib.suppress(OSError):
                    thaw_path(fs.mountpoint)
        for fs in reversed(self.mounted):
            run("umount", "-l", fs.mountpoint, check=False)
            if fs.device:
                run("losetup", "-d", fs.device, check=False)
        self.mounted.clear()


def thaw_path(path: str) -> bool:
    """FITHAW; True if it was frozen."""
    import errno
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FITHAW, 0)
        return True
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    finally:
        os.close(fd)


def freeze_path(path: str) -> None:
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
    finally:
        os.close(fd)


def assert_only_test_loops(mount_points: list[str], loops: LoopSet) -> None:
    allowed = {fs.mountpoint for fs in loops.mounted}
    for mp in mount_points:
        if mp not in allowed:
            raise AssertionError(f"refusing to freeze {mp}: not a test loop filesystem")


class Writer:
    """A child process that writes+fsyncs a file on a filesystem; done() tells if it finished."""

    def __init__(self, path: str, size: int = 4096) -> None:
        code = (
            "import os,sys\n"
            "fd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o644)\n"
            "os.write(fd,b'x'*int(sys.argv[2])); os.fsync(fd); os.close(fd)\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code, path, str(size)])

    def done(self, timeout: float = 0.0) -> bool:
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False


# -- a minimal kernel side of /dev/vmbus/hv_vss over SOCK_SEQPACKET --------------------


class FakeVssKernel:
    """Listens at <dev>/vmbus/hv_vss like the rootless simulator and plays the kernel."""

    def __init__(self, dev_root: str) -> None:
        os.makedirs(os.path.join(dev_root, "vmbus"), exist_ok=True)
        self.path = os.path.join(dev_root, "vmbus", "hv_vss")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.conn: socket.socket | None = None

    def accept(self, timeout: float = 20.0) -> None:
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(timeout)
        reg = self.conn.recv(64)
        assert len(reg) == 12 and reg[0] == 129, reg
        self.conn.send(struct.pack("<I", 129))

    def request(self, raw: bytes, timeout: float = 60.0) -> bytes:
        assert self.conn is not None
        self.conn.settimeout(timeout)
        self.conn.send(raw)
        return self.conn.recv(64)

    def op(self, op: int, flags: int = 0, timeout: float = 60.0) -> tuple[int, int]:
        reply = self.request(bytes([op]) + bytes(7) + struct.pack("<I", flags), timeout)
        assert len(reply) == 12, reply
        status, flags = struct.unpack_from("<I", reply, 0)[0], struct.unpack_from("<I", reply, 8)[0]
        return status, flags

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
