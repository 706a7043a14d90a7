"""Namespace plumbing for the sandbox: ctypes wrappers for the namespace and mount system
calls (Python 3.11 has none of them) and the fixed test network.

The network is a veth pair: ``eth0`` inside the sandbox, its peer ``hvsim0`` in a helper
network namespace that the parent holds open, so nothing ever touches the machine's own
interfaces, addresses or routes. Only the documentation ranges 192.0.2.0/24 and
2001:db8::/32 are used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess

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
SYS_PIVOT_ROOT = 155  # x86-64

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
