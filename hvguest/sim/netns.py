"""Namespace plumbing for the sandbox: ctypes wrappers for the namespace and mount system
calls (Python 3.11 has none of them), the fixed test network, and the helper process that
builds a sandbox (overlay root, /dev, /sys, FUSE and loop mounts) and execs its command.

The network is a veth pair: ``eth0`` inside the sandbox, its peer ``hvsim0`` in a helper
network namespace that the parent holds open, so nothing ever touches the machine's own
interfaces, addresses or routes. Only the documentation ranges 192.0.2.0/24 and
2001:db8::/32 are used.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import fcntl
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LO_FLAGS_AUTOCLEAR = 4
LOOP_INFO64_SIZE = 232  # struct loop_info64
LOOP_INFO64_FLAGS = 52  # offset of lo_flags: five u64, then lo_number, type, key size
SYS_PIVOT_ROOT = 155  # x86-64

SYSLOG_PATH = "/dev/log"
FUSE_FSTYPE = "fuse.hvguest-sim"
SETUP_FAILED = 111  # exit status of a helper whose setup failed


class SetupError(Exception):
    """The helper cannot build the sandbox; the parent gets the message."""


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    rc = _libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        ctypes.c_ulong(flags),
        data.encode() if data is not None else None,
    )
    _check(rc, f"mount {source} on {target} ({fstype})")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    rc = _libc.syscall(ctypes.c_long(SYS_PIVOT_ROOT), new_root.encode(), put_old.encode())
    _check(rc, "pivot_root")


def set_pdeathsig(sig: int) -> None:
    _check(_libc.prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(sig), 0, 0, 0), "prctl")


MAC = "00:15:5d:00:00:01"
IPV4 = "192.0.2.10/24"
IPV4_GATEWAY = "192.0.2.1"
IPV6 = "2001:db8::10/64"
IPV6_GATEWAY = "2001:db8::1"
NAMESERVER = "192.0.2.53"
HOSTNAME = "hvguest-sim"
PEER = "hvsim0"


def _ip(*args: str, fds: tuple[int, ...] = ()) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20,
                          pass_fds=fds, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _sysctl(path: str, value: str) -> None:
    with open(f"/proc/sys/net/{path}", "w") as f:
        f.write(value)


def build_network() -> int:
    """Move the calling (single-threaded) process into a new network namespace with the
    fixed ``eth0``; return an fd of the peer's namespace, which the caller must keep
    open as long as ``eth0`` should live (closing the last reference deletes the pair)."""
    unshare(CLONE_NEWNET)
    peer_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    unshare(CLONE_NEWNET)
    own_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        # Deterministic addresses: no duplicate address detection, so nothing is ever
        # "tentative" when a daemon under test enumerates them.
        for conf in ("all", "default"):
            _sysctl(f"ipv6/conf/{conf}/accept_dad", "0")
            _sysctl(f"ipv6/conf/{conf}/dad_transmits", "0")
        setns(peer_ns, CLONE_NEWNET)
        _ip("link", "add", PEER, "type", "veth", "peer", "name", "eth0", "address", MAC,
            "netns", f"/proc/self/fd/{own_ns}", fds=(own_ns,))
        _ip("link", "set", PEER, "up")
        setns(own_ns, CLONE_NEWNET)
        _ip("link", "set", "lo", "up")
        _ip("link", "set", "eth0", "up")
        _ip("addr", "add", IPV4, "dev", "eth0")
        _ip("-6", "addr", "add", IPV6, "dev", "eth0", "nodad")
        _ip("route", "add", "default", "via", IPV4_GATEWAY, "dev", "eth0")
        _ip("-6", "route", "add", "default", "via", IPV6_GATEWAY, "dev", "eth0")
    except BaseException:
        os.close(peer_ns)
        raise
    finally:
        os.close(own_ns)
    return peer_ns


# -- the sandbox helper (runs as ``python -m hvguest.sim.netns SPEC``) -------------------

_DEV_NODES = {  # name -> (major, minor); all 0666 like devtmpfs
    "null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
    "tty": (5, 0),
}


def _makedirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def set_autoclear(dev: str) -> None:
    """The loop device detaches itself when its last user (the mount, which goes with
    the namespace) is gone: nothing stays attached even if the simulator is SIGKILLed
    and never runs its clean-up. Set only once mounted, or the close below would be
    that last user."""
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = bytearray(LOOP_INFO64_SIZE)
        fcntl.ioctl(fd, LOOP_GET_STATUS64, info, True)
        flags = struct.unpack_from("=I", info, LOOP_INFO64_FLAGS)[0]
        struct.pack_into("=I", info, LOOP_INFO64_FLAGS, flags | LO_FLAGS_AUTOCLEAR)
        fcntl.ioctl(fd, LOOP_SET_STATUS64, bytes(info))
    finally:
        os.close(fd)


def _build_dev(root: str) -> None:
    dev = root + "/dev"
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=16m")
    for name, (major, minor) in _DEV_NODES.items():
        os.mknod(f"{dev}/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    for sub in ("shm", "pts", "mqueue"):
        _makedirs(f"{dev}/{sub}")
    mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")


def _bind_back(real: str, target: str) -> None:
    """Recreate ``real``'s entry at ``target`` (an empty tmpfs slot) as a bind or link."""
    if os.path.islink(real):
        os.symlink(os.readlink(real), target)
    elif os.path.isdir(real):
        os.mkdir(target)
        mount(real, target, None, MS_BIND | MS_REC)
    else:
        with open(target, "w"):
            pass
        mount(real, target, None, MS_BIND)


def _graft(real: str, target: str, tree: dict[str, Any]) -> None:
    """Put a tmpfs at ``target`` (showing ``real``) holding ``real``'s entries bound back,
    with ``tree``'s fake entries added; descends where a fake entry's directory exists."""
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    try:
        names = os.listdir(real)
    except OSError:
        names = []
    for name in names:
        if name not in tree:
            _bind_back(f"{real}/{name}", f"{target}/{name}")
    for name, sub in tree.items():
        path, real_path = f"{target}/{name}", f"{real}/{name}"
        if isinstance(sub, dict):
            if name in names and os.path.isdir(real_path) and not os.path.islink(real_path):
                os.mkdir(path)
                _graft(real_path, path, sub)
            else:
                _plant(path, sub)
        elif name in names:
            raise SetupError(f"fake sysfs entry {real_path} exists on this machine")
        else:
            _plant(path, sub)


def _plant(path: str, node: Any) -> None:
    if isinstance(node, dict):
        _makedirs(path)
        for name, sub in node.items():
            _plant(f"{path}/{name}", sub)
        return
    kind, value = node
    if kind == "link":
        os.symlink(value, path)
    elif kind == "dir":
        _makedirs(path)
    elif kind == "bind":
        if os.path.isdir(value):
            _makedirs(path)
        else:
            with open(path, "w"):
                pass
        mount(value, path, None, MS_BIND)
    else:
        with open(path, "wb") as f:
            f.write(base64.b64decode(value))


def _fake_sys(root: str, base: str, entries: list[list[str]]) -> None:
    # Real entries are bound back from a second mount of the sandbox's own sysfs (not the
    # machine's /sys): network-namespaced parts like /sys/class/net must show eth0.
    real_sys = f"{base}/sys"
    os.mkdir(real_sys)
    mount("sysfs", real_sys, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    tree: dict[str, Any] = {}
    for rel, kind, value in entries:
        parts = rel.strip("/").split("/")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SetupError(f"fake_sys {rel!r} lies below a file")
        node[parts[-1]] = {} if kind == "dir" else (kind, value)
    for top, sub in tree.items():
        if not isinstance(sub, dict):
            raise SetupError(f"fake_sys entry /sys/{top} must be below a directory")
        if not os.path.isdir(f"{real_sys}/{top}"):
            raise SetupError(f"/sys/{top} does not exist on this machine")
        _graft(f"{real_sys}/{top}", f"{root}/sys/{top}", sub)


def _mount_fuse(root: str, base: str, index: int, m: dict[str, Any]) -> None:
    if m["file"] is None:
        target = root + m["path"]
        _makedirs(target)
        mount("hvguest-sim", target, FUSE_FSTYPE, MS_NOSUID, m["options"])
    else:
        # Mount the whole server out of sight and bind the one file to its place.
        staging = f"{base}/fuse{index}"
        _makedirs(staging)
        mount("hvguest-sim", staging, FUSE_FSTYPE, MS_NOSUID, m["options"])
        target = root + m["path"]
        _makedirs(os.path.dirname(target))
        with open(target, "w"):
            pass
        mount(f"{staging}/{m['file']}", target, None, MS_BIND)


def check_mounts(loops: list[str], mounts: str = "/proc/self/mounts") -> None:
    """The reference VSS daemon freezes every /dev/* mount: only test loops may be rw."""
    with open(mounts) as f:
        for line in f:
            source, mnt, _fstype, opts = line.split()[:4]
            if source.startswith("/dev/") and "rw" in opts.split(",") and source not in loops:
                raise SetupError(f"refusing to run: {source} is mounted rw at {mnt} "
                                   "inside the sandbox")


def _setup(spec: dict[str, Any], report: Any) -> int | None:
    set_pdeathsig(signal.SIGKILL)
    if os.getppid() != spec["ppid"]:
        raise SetupError("parent exited")
    peer_ns = None
    if spec["network"]:
        peer_ns = build_network()
        report(f"peer-netns {peer_ns}")
    unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC)
    socket.sethostname(HOSTNAME)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    base = spec["base"]
    mount("tmpfs", base, "tmpfs", 0, "mode=700")
    for sub in ("upper", "work", "root"):
        os.mkdir(f"{base}/{sub}")
    root = f"{base}/root"
    mount("overlay", root, "overlay", 0,
                f"lowerdir=/,upperdir={base}/upper,workdir={base}/work")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV
                | MS_NOEXEC)
    mount("sysfs", root + "/sys", "sysfs", MS_NOSUID | MS_NODEV
                | MS_NOEXEC)
    _build_dev(root)
    mount("tmpfs", root + "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    _makedirs(root + "/run/lock")
    os.chmod(root + "/run/lock", 0o1777)
    if spec["fake_sys"]:
        _fake_sys(root, base, spec["fake_sys"])
    loops = spec["loops"]
    if loops and spec["hide_loop_markers"] and os.path.isdir(root + "/sys/dev/block"):
        mount("tmpfs", root + "/sys/dev/block", "tmpfs", MS_NOSUID
                    | MS_NODEV, "mode=755")
    loop_devs: list[tuple[str, int]] = []
    for lp in loops:
        done = subprocess.run(["losetup", "--find", "--show", lp["image"]], timeout=20,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise SetupError(f"losetup {lp['image']}: {done.stderr.strip()}")
        dev = done.stdout.strip()
        report(f"loop {dev}")
        loop_devs.append((dev, os.stat(dev).st_rdev))
    for index, m in enumerate(spec["fuse"]):
        _mount_fuse(root, base, index, m)
        os.close(m["fd"])
    os.chdir(root)
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")
    for (dev, rdev), lp in zip(loop_devs, loops, strict=True):
        os.mknod(dev, 0o660 | stat.S_IFBLK, rdev)
        _makedirs(lp["mountpoint"])
        mount(dev, lp["mountpoint"], lp["fstype"])
        set_autoclear(dev)
    log_sock = socket.socket(fileno=spec["syslog_fd"])
    log_sock.bind(SYSLOG_PATH)
    os.chmod(SYSLOG_PATH, 0o666)
    log_sock.detach()
    os.close(spec["syslog_fd"])
    with open("/etc/hostname", "w") as f:
        f.write(HOSTNAME + "\n")
    # The reference KVP daemon resolves its own name at start-up; answered from here it
    # never waits for the (unreachable) test name server.
    with open("/etc/hosts", "w") as f:
        f.write(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n"
                "::1\tlocalhost ip6-localhost ip6-loopback\n")
    if spec["network"]:
        if os.path.islink("/etc/resolv.conf"):
            os.unlink("/etc/resolv.conf")
        with open("/etc/resolv.conf", "w") as f:
            f.write(f"nameserver {NAMESERVER}\n")
    # Always, not only with loops: a VSS daemon under test must never see a real disk.
    check_mounts([dev for dev, _ in loop_devs])
    os.chdir(spec["cwd"])
    return peer_ns


def child_main(argv: list[str]) -> None:
    with open(argv[0]) as f:
        spec = json.load(f)
    status, go = spec["status_fd"], spec["go_fd"]
    for fd in (status, go, spec["syslog_fd"]):
        os.set_inheritable(fd, False)

    def report(line: str) -> None:
        os.write(status, line.encode() + b"\n")

    try:
        peer_ns = _setup(spec, report)
    except BaseException as e:  # the parent reads the reason from the status pipe
        report(f"error {type(e).__name__}: {e}".replace("\n", " "))
        os._exit(SETUP_FAILED)
    report("ready")
    if os.read(go, 1) != b"g":
        os._exit(SETUP_FAILED)
    if peer_ns is not None:
        os.close(peer_ns)  # the parent holds it now
    try:
        os.execvpe(spec["command"][0], spec["command"], spec["env"])
    except OSError as e:
        report(f"error exec {spec['command'][0]}: {e}")
        os._exit(127)


if __name__ == "__main__":
    child_main(sys.argv[1:])
