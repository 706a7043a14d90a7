"""UdevWatcher over a fake uevent socket: filters, sender check, drain, errors, the None
fallback; and, as root, a real kernel uevent from an interface in a private network namespace."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from hvguest.errors import TransportError
from hvguest.transport.udev import OVERFLOW, UdevWatcher


def uevent(action: str, subsystem: str, name: str, **props: str) -> bytes:
    devpath = f"/devices/virtual/{subsystem}/{name}"
    fields = {"ACTION": action, "DEVPATH": devpath, "SUBSYSTEM": subsystem, **props}
    return f"{action}@{devpath}\0".encode() + b"".join(
        f"{k}={v}\0".encode() for k, v in fields.items())


class FakeSocket:
    """A uevent socket as UdevWatcher uses it: queued datagrams from the kernel (port
    id 0) unless given with a sender; an OSError is raised once; never blocks."""

    def __init__(self) -> None:
        self.queue: list[Any] = []  # bytes, (bytes, sender port id), or an OSError
        self.closed = False

    def fileno(self) -> int:
        return 42

    def recvfrom(self, bufsize: int) -> tuple[bytes, Any]:
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        item = self.queue.pop(0)
        if isinstance(item, OSError):
            raise item
        data, sender = item if isinstance(item, tuple) else (item, 0)
        return data[:bufsize], (sender, 1)

    def close(self) -> None:
        self.closed = True


def watcher(subsystems: tuple[str, ...] = ("net", "vmbus")) -> tuple[UdevWatcher, FakeSocket]:
    sock = FakeSocket()
    return UdevWatcher(subsystems, socket_factory=lambda: sock), sock


def test_subsystems_kept_once_in_order() -> None:
    w, m = watcher(("net", "vmbus", "net"))
    assert w.subsystems == ("net", "vmbus")
    assert w.fileno() == 42 and w.drain() == []


def test_drain_returns_every_queued_event_with_a_property_subset() -> None:
    w, m = watcher()
    m.queue = [uevent("add", "net", "eth1", INTERFACE="eth1", IFINDEX="3", ID_PATH="x"),
               uevent("remove", "vmbus", "f8b3781b", MODALIAS="vmbus:3026")]
    events = w.drain()
    assert [(e.action, e.subsystem, e.sys_name) for e in events] == [
        ("add", "net", "eth1"), ("remove", "vmbus", "f8b3781b")]
    assert dict(events[0].properties) == {"INTERFACE": "eth1", "IFINDEX": "3"}
    assert events[0].sys_path == "/sys/devices/virtual/net/eth1"
    assert w.drain() == []
    with pytest.raises(TypeError):
        events[0].properties["X"] = "y"  # type: ignore[index]


def test_drain_drops_other_subsystems() -> None:
    w, m = watcher(("net",))
    m.queue = [uevent("add", "block", "loop0"), uevent("add", "net", "eth1")]
    assert [e.sys_name for e in w.drain()] == ["eth1"]


def test_drain_drops_what_a_process_sent_and_what_is_malformed() -> None:
    """A privileged process may send to the uevent group; only the kernel's count."""
    w, m = watcher(("net",))
    m.queue = [(uevent("add", "net", "forged"), 4242), b"garbage\0",
               uevent("add", "net", "eth1")]
    assert [e.sys_name for e in w.drain()] == ["eth1"]
    assert w.foreign == 1 and w.malformed == 1


def test_drain_reads_at_most_limit_then_the_rest() -> None:
    w, m = watcher(("net",))
    m.queue = [uevent("add", "net", f"veth{i}") for i in range(5)]
    assert len(w.drain(limit=3)) == 3
    assert [e.sys_name for e in w.drain(limit=3)] == ["veth3", "veth4"]


def test_every_datagram_counts_towards_the_limit() -> None:
    """A storm of other subsystems' or forged events cannot hold the loop."""
    w, m = watcher(("net",))
    m.queue = [uevent("add", "block", "loop0"), (uevent("add", "net", "forged"), 99),
               b"junk", uevent("add", "net", "eth1")]
    assert w.drain(limit=3) == []
    assert [e.sys_name for e in w.drain(limit=3)] == ["eth1"]


def test_overflow_reported_as_an_event() -> None:
    w, m = watcher(("net",))
    m.queue = [OSError(errno.ENOBUFS, "No buffer space available"), uevent("add", "net", "e")]
    events = w.drain()
    assert [e.action for e in events] == [OVERFLOW, "add"] and w.lost == 1


def test_other_receive_errors_raise_transport_error() -> None:
    w, m = watcher(("net",))
    m.queue = [OSError(errno.EBADF, "Bad file descriptor")]
    with pytest.raises(TransportError, match="reading udev events failed"):
        w.drain()


def test_closed_watcher() -> None:
    w, m = watcher()
    w.close()
    assert w.closed and m.closed and w.drain() == []
    with pytest.raises(TransportError):
        w.fileno()


@pytest.mark.parametrize("error", [OSError(errno.EAFNOSUPPORT, "Address family not supported"),
                                   OSError(errno.EPROTONOSUPPORT, "Protocol not supported")])
def test_open_returns_none_when_events_are_unavailable(
        error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> FakeSocket:
        raise error

    caplog.set_level("DEBUG", logger="hvguest.transport.udev")
    assert UdevWatcher.open(["net"], socket_factory=broken) is None
    assert any("relying on periodic polls" in r.getMessage() for r in caplog.records)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        UdevWatcher([], socket_factory=FakeSocket)


def test_misc_device_name_as_libudev_shows_it() -> None:
    w, m = watcher(("misc",))
    m.queue = [uevent("add", "misc", "vmbus!hv_kvp", DEVNAME="vmbus/hv_kvp")]
    (ev,) = w.drain()
    assert ev.sys_name == "vmbus/hv_kvp" and ev.properties == {"DEVNAME": "/dev/vmbus/hv_kvp"}
    assert ev.sys_path == "/sys/devices/virtual/misc/vmbus!hv_kvp"


def test_the_real_socket_is_not_pyudev() -> None:
    """The daemons' resident memory: the watcher needs no libudev."""
    code = ("import sys; from hvguest.transport.udev import UdevWatcher\n"
            "w = UdevWatcher.open(['net'])\n"
            "print(w is not None, 'pyudev' in sys.modules, 'ctypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.split()
    assert out == ["True", "False", "False"], out


# -- a real kernel event ---------------------------------------------------------------

_NETNS_CHILD = textwrap.dedent("""
    import ctypes, json, subprocess, sys, time
    from hvguest.transport.udev import UdevWatcher

    CLONE_NEWNET = 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        sys.exit("unshare(CLONE_NEWNET): errno %d" % ctypes.get_errno())
    # Inside the new namespace: its interfaces' events reach only its own sockets.
    watcher = UdevWatcher(["net"])

    def wait_for(action):
        seen = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            seen += [(e.action, e.sys_name, dict(e.properties)) for e in watcher.drain()]
            if any(a == action and n == "hvg0" for a, n, _ in seen):
                break
            time.sleep(0.05)
        return seen

    add = ["ip", "link", "add", "hvg0", "type", "dummy"]
    if subprocess.run(add, capture_output=True).returncode != 0:
        # No dummy driver in this kernel: a veth pair gives the same kind of event.
        subprocess.run(["ip", "link", "add", "hvg0", "type", "veth", "peer", "hvg1"],
                       check=True)
    added = wait_for("add")
    subprocess.run(["ip", "link", "del", "hvg0"], check=True)
    removed = wait_for("remove")
    watcher.close()
    print(json.dumps({"added": added, "removed": removed}))
""")


@pytest.mark.root
def test_real_kernel_event_in_a_private_network_namespace() -> None:
    """The namespace (and the interface in it) ends with the child process."""
    proc = subprocess.run([sys.executable, "-c", _NETNS_CHILD], capture_output=True, text=True,
                          timeout=30, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__))))))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    added = [(a, n) for a, n, _ in out["added"]]
    assert ("add", "hvg0") in added
    props = next(p for a, n, p in out["added"] if a == "add" and n == "hvg0")
    assert props["INTERFACE"] == "hvg0" and props["IFINDEX"].isdigit()
    assert ("remove", "hvg0") in [(a, n) for a, n, _ in out["removed"]]


# -- EventTrigger ----------------------------------------------------------------------


class FakeLoop:
    def __init__(self) -> None:
        self.readers: dict[Any, Callable[[], Any]] = {}
        self.later: list[tuple[float, Callable[[], Any], SimpleNamespace]] = []
        self.stops: list[Callable[[], Any]] = []

    def add_reader(self, fd: Any, callback: Callable[[], Any]) -> None:
        self.readers[fd] = callback

    def remove_reader(self, fd: Any) -> None:
        self.readers.pop(fd, None)

    def call_later(self, delay: float, callback: Callable[[], Any]) -> SimpleNamespace:
        timer = SimpleNamespace(cancelled=False)
        timer.cancel = lambda: setattr(timer, "cancelled", True)
        self.later.append((delay, callback, timer))
        return timer

    def on_stop(self, callback: Callable[[], Any]) -> None:
        self.stops.append(callback)

    def fire(self) -> None:
        due, self.later = self.later, []
        for _, callback, timer in due:
            if not timer.cancelled:
                callback()


def test_trigger_calls_once_per_burst_of_wanted_events() -> None:
    from hvguest.transport.udev import EventTrigger

    w, m = watcher(("net",))
    loop, calls = FakeLoop(), []
    trig = EventTrigger(loop, w, lambda: calls.append(1), delay=2.0,
                        wanted=lambda e: e.action in ("add", "remove", "move"))
    assert loop.readers[w] == trig.on_readable and loop.stops == [trig.close]
    m.queue = [uevent("change", "net", "eth0")]
    trig.on_readable()
    assert loop.later == []  # not wanted: nothing scheduled
    m.queue = [uevent("add", "net", "eth1"), uevent("move", "net", "enp1s0")]
    trig.on_readable()
    m.queue = [uevent("remove", "net", "eth2")]
    trig.on_readable()
    assert [d for d, _, _ in loop.later] == [2.0]
    loop.fire()
    assert calls == [1] and trig.events == 3 and trig.pending is None
    # Overflow always counts, whatever the filter says.
    m.queue = [OSError(errno.ENOBUFS, "No buffer space available")]
    trig.on_readable()
    loop.fire()
    assert calls == [1, 1]
    # Stop: the pending call is cancelled and the watcher closed.
    m.queue = [uevent("add", "net", "eth3")]
    trig.on_readable()
    trig.close()
    loop.fire()
    assert calls == [1, 1] and w.closed and loop.readers == {}


_FORGED_CHILD = textwrap.dedent("""
    import ctypes, json, socket, subprocess, sys, time
    from hvguest.transport.udev import UdevWatcher
    from hvguest.transport.uevent import NETLINK_KOBJECT_UEVENT

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET: the forgery reaches no one else
        sys.exit("unshare(CLONE_NEWNET): errno %d" % ctypes.get_errno())
    watcher = UdevWatcher(["net"])
    forger = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    forger.bind((0, 0))
    devpath = "/devices/virtual/net/forged0"
    forged = (f"add@{devpath}\\0ACTION=add\\0DEVPATH={devpath}\\0SUBSYSTEM=net\\0"
              "INTERFACE=forged0\\0").encode()
    forger.sendto(forged, (0, 1))  # root may send to the kernel's group
    subprocess.run(["ip", "link", "add", "hvg0", "type", "veth", "peer", "hvg1"], check=True)
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "hvg0" not in seen:
        seen += [e.sys_name for e in watcher.drain()]
        time.sleep(0.05)
    print(json.dumps({"seen": seen, "foreign": watcher.foreign}))
""")


@pytest.mark.root
def test_a_uevent_forged_by_a_privileged_process_is_dropped() -> None:
    proc = subprocess.run([sys.executable, "-c", _FORGED_CHILD], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "hvg0" in out["seen"] and "forged0" not in out["seen"]
    assert out["foreign"] == 1
