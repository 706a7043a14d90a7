"""Offered services: the before/after diff, its log lines, and device events that bring
hvguest-heartbeatd's next scan forward."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_udev import FakeWatcher

from hvguest.daemon import Runtime
from hvguest.daemons import heartbeatd
from hvguest.daemons.heartbeatd import HeartbeatDaemon
from hvguest.heartbeat.settings import HeartbeatSettings
from hvguest.paths import Paths
from hvguest.pool import PoolRegistry
from hvguest.state import read_state
from hvguest.transport.udev import OVERFLOW, UdevEvent
from hvguest.vmbus.inventory import scan
from hvguest.vmbus.offers import SERVICE_TITLES, offer_changes, offered_services

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()

VSS_INSTANCE = "2450ee40-33bf-4fbd-892e-9fb06e9214cf"
ALL = frozenset(SERVICE_TITLES)


@pytest.fixture(autouse=True)
def fresh_pools() -> Iterator[None]:
    yield
    POOLS.close_all()


# -- the pure diff -------------------------------------------------------------------


def test_no_change_no_lines() -> None:
    assert offer_changes(ALL, set(ALL)) == []
    assert offer_changes(set(), set()) == []


def test_added_and_withdrawn_in_a_stable_order() -> None:
    before = {"heartbeat", "kvp", "vss"}
    after = {"heartbeat", "kvp", "fcopy", "timesync"}
    assert offer_changes(before, after) == [
        "host now offers Time Synchronization",
        "host withdrew Backup (VSS)",
        "host now offers Guest Service Interface (fcopy)",
    ]


def test_everything_withdrawn() -> None:
    lines = offer_changes(ALL, frozenset())
    assert len(lines) == len(ALL) and all(line.startswith("host withdrew ") for line in lines)


def test_offered_services_from_a_scan(machine: Callable[..., Paths]) -> None:
    assert offered_services(scan(machine())) == ALL
    # Offered but not bound to a driver is still offered.
    assert offered_services(scan(machine(omit=["vss", "fcopy"], unbind=["kvp"]))) == (
        ALL - {"vss", "fcopy"}
    )


# -- the daemon ------------------------------------------------------------------------


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeClock:
    def sample(self) -> tuple[float, float, float]:
        return 100.0, 100.0, 100.0

    def close(self) -> None:
        pass


class FakeProbe:
    def __init__(self) -> None:
        self.asked = 0

    def failed_units(self) -> list[str]:
        self.asked += 1
        return []

    def unit_states(self, units: Any) -> dict[str, str]:
        return {u: "active" for u in units}


def make(paths: Paths) -> HeartbeatDaemon:
    os.makedirs(paths.pool_dir, exist_ok=True)
    return HeartbeatDaemon(
        paths, HeartbeatSettings(), probe=FakeProbe(), clock_opener=lambda dev: FakeClock()
    )


def withdraw_vss(paths: Paths) -> None:
    shutil.rmtree(os.path.join(paths.vmbus_devices, VSS_INSTANCE))


def test_poll_logs_each_change_once(
    machine: Callable[..., Paths], caplog: pytest.LogCaptureFixture
) -> None:
    paths = machine()
    d = make(paths)
    caplog.set_level(logging.INFO, logger="hvguest.daemons.heartbeatd")
    d.poll()  # the first scan is the baseline: nothing "changed"
    assert not [r for r in caplog.records if "host " in r.getMessage()]
    withdraw_vss(paths)
    d.poll()
    d.poll()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("host ")]
    assert lines == ["host withdrew Backup (VSS)"]
    doc = read_state(paths, "heartbeat")
    assert doc is not None
    assert doc["last_op"]["op"] == "offer" and doc["last_op"]["detail"] == lines[0]


def vmbus_event(action: str) -> UdevEvent:
    return UdevEvent(action, "vmbus", VSS_INSTANCE, f"/sys/bus/vmbus/devices/{VSS_INSTANCE}")


@pytest.fixture
def loop() -> Iterator[tuple[Runtime, Mono]]:
    mono = Mono()
    runtime = Runtime("hvguest-heartbeatd", clock=mono)
    yield runtime, mono
    runtime.close()


def test_event_burst_brings_one_scan_forward(
    machine: Callable[..., Paths], loop: tuple[Runtime, Mono], caplog: pytest.LogCaptureFixture
) -> None:
    runtime, mono = loop
    paths = machine()
    d = make(paths)
    d.poll()
    watcher = FakeWatcher()
    trigger = heartbeatd.watch_devices(runtime, watcher, d.rescan)
    assert trigger is not None
    caplog.set_level(logging.INFO, logger="hvguest.daemons.heartbeatd")
    withdraw_vss(paths)
    # The rescind: the device, then its channel and driver events, read in two rounds.
    watcher.push(vmbus_event("unbind"), vmbus_event("remove"))
    runtime.run_once(0)
    watcher.push(UdevEvent("remove", "misc", "vmbus!hv_vss", "/sys/devices/virtual/misc/x"))
    runtime.run_once(0)
    assert d.rescans == 0, "debounced: no scan before the delay"
    mono.t += heartbeatd.RESCAN_DELAY
    runtime.run_once(0)
    assert d.rescans == 1 and trigger.calls == 1 and trigger.events == 3
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("host ")] == [
        "host withdrew Backup (VSS)"
    ]
    # Quiet afterwards: no further scan without a new event.
    mono.t += 5
    runtime.run_once(0)
    assert d.rescans == 1
    # A lost-events marker is reason enough to look again.
    watcher.push(UdevEvent(OVERFLOW, "", "", ""))
    runtime.run_once(0)
    mono.t += heartbeatd.RESCAN_DELAY
    runtime.run_once(0)
    assert d.rescans == 2
    watcher.close()


def test_rescan_neither_counts_stalls_nor_asks_the_units(machine: Callable[..., Paths]) -> None:
    """Stalls are counted in poll intervals; an early look must not add one, or a
    stream of device events would report a live host as out of contact."""
    paths = machine()
    d = make(paths)
    d.settings = HeartbeatSettings(stall_threshold=2)
    d.liveness.threshold = 2
    d.poll()
    d.poll()  # the fixture's counters never move: one stall
    probe = d.probe
    assert isinstance(probe, FakeProbe)
    asked = probe.asked
    for _ in range(5):
        d.rescan()
    assert d.liveness.stalls == 1 and d.liveness.state != "no-contact"
    assert probe.asked == asked and d.polls == 2 and d.rescans == 5
    doc = read_state(paths, "heartbeat")
    assert doc is not None and doc["state"] == "running"
    assert doc["details"]["health"]["level"] == "ok"  # the last full poll's answer
    withdraw_vss(paths)
    d.rescan()
    assert "vss" not in (d.offered or ())
    d.poll()  # the next full poll counts the stall again
    assert d.liveness.state == "no-contact"


def test_failed_watcher_falls_back_to_the_periodic_poll(
    machine: Callable[..., Paths], loop: tuple[Runtime, Mono], caplog: pytest.LogCaptureFixture
) -> None:
    runtime, mono = loop
    d = make(machine())
    watcher = FakeWatcher()
    trigger = heartbeatd.watch_devices(runtime, watcher, d.rescan)
    assert trigger is not None
    runtime.call_every(10, d.poll)
    watcher.broken = True
    watcher.push(vmbus_event("add"))
    runtime.run_once(0)
    assert watcher.closed and trigger.watcher is None
    assert any("periodic poll only" in r.getMessage() for r in caplog.records)
    mono.t += 10
    runtime.run_once(0)
    assert d.polls == 1  # the periodic poll goes on


def test_no_watcher_no_trigger(loop: tuple[Runtime, Mono]) -> None:
    assert heartbeatd.watch_devices(loop[0], None, lambda: None) is None


def test_watcher_only_for_the_real_sys(machine: Callable[..., Paths]) -> None:
    assert heartbeatd.open_watcher(machine()) is None
