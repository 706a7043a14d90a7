"""UdevWatcher over a fake pyudev monitor: filters, drain, errors, the None fallback;
and, as root, a real kernel uevent from an interface in a private network namespace."""

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
from hvguest.transport.udev import OVERFLOW, UdevEvent, UdevWatcher, default_source


def device(action: str, subsystem: str, name: str, **props: str) -> SimpleNamespace:
    return SimpleNamespace(action=action, subsystem=subsystem, sys_name=name,
                           sys_path=f"/sys/devices/virtual/{subsystem}/{name}",
                           properties={"SUBSYSTEM": subsystem, "ACTION": action, **props})


class FakeMonitor:
    """pyudev.Monitor as UdevWatcher uses it: queued devices, poll(0) never blocks."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.filters: list[str] = []
        self.started = False
        self.queue: list[Any] = []  # devices, or an OSError to raise once

    def fileno(self) -> int:
        return 42

    def filter_by(self, subsystem: str, device_type: str | None = None) -> None:
        self.filters.append(subsystem)

    def start(self) -> None:
        self.started = True

    def poll(self, timeout: float | None = None) -> Any:
        assert timeout == 0, "the watcher must never block the loop"
        if not self.queue:
            return None
        item = self.queue.pop(0)
        if isinstance(item, OSError):
            raise item
        return item


def fake(monitors: list[FakeMonitor]) -> Callable[[Any, str], FakeMonitor]:
    def factory(context: Any, source: str) -> FakeMonitor:
        assert context == "ctx"
        m = FakeMonitor(source)
        monitors.append(m)
        return m

    return factory


def watcher(subsystems: tuple[str, ...] = ("net", "vmbus")) -> tuple[UdevWatcher, FakeMonitor]:
    made: list[FakeMonitor] = []
    w = UdevWatcher(subsystems, source="udev", context_factory=lambda: "ctx",
                    monitor_factory=fake(made))
    return w, made[0]


def test_filters_installed_and_monitor_started() -> None:
    w, m = watcher(("net", "vmbus", "net"))
    assert m.filters == ["net", "vmbus"] and m.started and m.source == "udev"
    assert w.fileno() == 42 and w.drain() == []


def test_drain_returns_every_queued_event_with_a_property_subset() -> None:
    w, m = watcher()
    m.queue = [device("add", "net", "eth1", INTERFACE="eth1", IFINDEX="3", ID_PATH="x"),
               device("remove", "vmbus", "f8b3781b", MODALIAS="vmbus:3026")]
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
    m.queue = [device("add", "block", "loop0"), device("add", "net", "eth1")]
    assert [e.sys_name for e in w.drain()] == ["eth1"]


def test_drain_reads_at_most_limit_then_the_rest() -> None:
    w, m = watcher(("net",))
    m.queue = [device("add", "net", f"veth{i}") for i in range(5)]
    assert len(w.drain(limit=3)) == 3
    assert [e.sys_name for e in w.drain(limit=3)] == ["veth3", "veth4"]


def test_overflow_reported_as_an_event() -> None:
    w, m = watcher(("net",))
    m.queue = [OSError(errno.ENOBUFS, "No buffer space available"), device("add", "net", "e")]
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
    assert w.closed and w.drain() == []
    with pytest.raises(TransportError):
        w.fileno()


@pytest.mark.parametrize("error", [OSError(errno.EAFNOSUPPORT, "Address family not supported"),
                                   OSError("Could not create udev monitor"),
                                   ImportError("libudev.so.1 not found")])
def test_open_returns_none_when_events_are_unavailable(
        error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    def broken(context: Any, source: str) -> FakeMonitor:
        raise error

    caplog.set_level("DEBUG", logger="hvguest.transport.udev")
    assert UdevWatcher.open(["net"], source="kernel", context_factory=lambda: "ctx",
                            monitor_factory=broken) is None
    assert any("relying on periodic polls" in r.getMessage() for r in caplog.records)


def test_open_returns_none_when_the_context_fails() -> None:
    def no_libudev() -> Any:
        raise ImportError("No module named 'pyudev'")

    assert UdevWatcher.open(["net"], context_factory=no_libudev) is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        UdevWatcher([], source="udev", context_factory=lambda: "ctx", monitor_factory=fake([]))
    with pytest.raises(ValueError):
        UdevWatcher(["net"], source="bogus", context_factory=lambda: "ctx",
                    monitor_factory=fake([]))


def test_default_source(tmp_path: Any) -> None:
    control = os.path.join(str(tmp_path), "control")
    ns_a = os.path.join(str(tmp_path), "a")
    ns_b = os.path.join(str(tmp_path), "b")
    for p in (ns_a, ns_b):
        open(p, "w").close()
    missing = os.path.join(str(tmp_path), "missing")
    # No udevd: libudev would disable the udev source; the kernel's still works.
    assert default_source(control=control, self_ns=ns_a, init_ns=ns_a) == "kernel"
    open(control, "w").close()
    assert default_source(control=control, self_ns=ns_a, init_ns=ns_a) == "udev"
    # A private network namespace never hears udevd's multicasts.
    assert default_source(control=control, self_ns=ns_a, init_ns=ns_b) == "kernel"
    # Cannot tell: the source that works either way.
    assert default_source(control=control, self_ns=ns_a, init_ns=missing) == "kernel"


def test_event_from_device_without_action() -> None:
    dev = SimpleNamespace(action=None, subsystem="misc", sys_name="vmbus!hv_kvp",
                          sys_path="/sys/devices/virtual/misc/vmbus!hv_kvp",
                          properties={"DEVNAME": "/dev/vmbus/hv_kvp"})
    ev = UdevEvent.from_device(dev)
    assert ev.action == "" and ev.properties == {"DEVNAME": "/dev/vmbus/hv_kvp"}


# -- a real kernel event ---------------------------------------------------------------

_NETNS_CHILD = textwrap.dedent("""
    import ctypes, json, subprocess, sys, time
    from hvguest.transport.udev import UdevWatcher

    CLONE_NEWNET = 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        sys.exit("unshare(CLONE_NEWNET): errno %d" % ctypes.get_errno())
    # Inside the new namespace: its interfaces' events reach only its own sockets.
    watcher = UdevWatcher(["net"], source="kernel")

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
    m.queue = [device("change", "net", "eth0")]
    trig.on_readable()
    assert loop.later == []  # not wanted: nothing scheduled
    m.queue = [device("add", "net", "eth1"), device("move", "net", "enp1s0")]
    trig.on_readable()
    m.queue = [device("remove", "net", "eth2")]
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
    m.queue = [device("add", "net", "eth3")]
    trig.on_readable()
    trig.close()
    loop.fire()
    assert calls == [1, 1] and w.closed and loop.readers == {}
