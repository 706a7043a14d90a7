"""hvguest-kvpd: network interface events refresh the FQDN soon, debounced, once more
later; other events and a failing watcher change nothing else."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_kvp_device import IdleKvpDevice
from fake_udev import FakeWatcher

from hvguest.config import load_config_text
from hvguest.daemon import Runtime
from hvguest.daemons import kvpd
from hvguest.daemons.kvpd import KvpService
from hvguest.kvp.autopool import Fqdn
from hvguest.kvp.settings import KvpSettings
from hvguest.paths import Paths
from hvguest.pool import PoolRegistry
from hvguest.transport.udev import UdevEvent

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()


FakeTransport = IdleKvpDevice


class CountingResolver:
    def __init__(self) -> None:
        self.calls = 0
        self.done = threading.Event()

    def __call__(self, host: str) -> str:
        self.calls += 1
        self.done.set()
        return f"{host}.example.net"

    def wait(self, calls: int, fqdn: Fqdn) -> None:
        """Until the lookup thread has answered and let go (a refresh while it is busy
        starts no new lookup)."""
        deadline = time.monotonic() + 5
        while (self.calls < calls or fqdn._busy) and time.monotonic() < deadline:
            self.done.wait(0.05)
            self.done.clear()
        assert self.calls == calls and not fqdn._busy


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def net(action: str, name: str = "eth1") -> UdevEvent:
    return UdevEvent(action, "net", name, f"/sys/devices/virtual/net/{name}")


@pytest.fixture
def env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    paths = Paths(pool_dir=str(tmp_path / "hyperv"), run=str(tmp_path / "run"))
    settings = load_config_text("kvp:\n  fqdn_timeout: 0.5\n").get(KvpSettings)
    mono = Mono()
    runtime = Runtime("hvguest-kvpd", clock=mono)
    watcher = FakeWatcher()
    service = KvpService(
        paths, settings, runtime, transport=FakeTransport(), clock=mono, udev=watcher
    )
    resolver = CountingResolver()
    service.auto.fqdn = Fqdn(resolve=resolver, hostname=lambda: "vm1")
    service.start()
    resolver.wait(1, service.auto.fqdn)  # the lookup at start
    yield service, runtime, mono, watcher, resolver
    service.stop()
    runtime.close()
    watcher.close()
    POOLS.close_all()


def test_interface_burst_refreshes_fqdn_once_then_follows_up(env: Any) -> None:
    service, runtime, mono, watcher, resolver = env
    watcher.push(net("add", "eth1"), net("move", "enp1s0"))
    runtime.run_once(0)
    watcher.push(net("add", "eth2"))
    runtime.run_once(0)
    assert resolver.calls == 1, "debounced: nothing before the delay"
    mono.t += kvpd.FQDN_EVENT_DELAY
    runtime.run_once(0)
    resolver.wait(2, service.auto.fqdn)
    assert service.auto.fqdn.value == "vm1.example.net"
    # Later, once more: the DHCP client has configured the interface by then.
    mono.t += kvpd.FQDN_FOLLOW_UP
    runtime.run_once(0)
    resolver.wait(3, service.auto.fqdn)
    assert service.interface_events is not None and service.interface_events.calls == 1


def test_other_net_events_are_ignored(env: Any) -> None:
    service, runtime, mono, watcher, resolver = env
    watcher.push(net("change"), net("bind"))
    runtime.run_once(0)
    mono.t += kvpd.FQDN_EVENT_DELAY
    runtime.run_once(0)
    assert service.interface_events.pending is None and resolver.calls == 1


def test_failing_watcher_is_dropped_and_the_daemon_goes_on(env: Any) -> None:
    service, runtime, mono, watcher, resolver = env
    watcher.broken = True
    watcher.push(net("add"))
    runtime.run_once(0)
    assert watcher.closed and service.interface_events.watcher is None
    assert service.transport.is_open


def test_without_a_watcher_nothing_is_registered(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    paths = Paths(pool_dir=str(tmp_path / "hyperv"), run=str(tmp_path / "run"))
    settings = load_config_text("kvp:\n  fqdn_timeout: 0.5\n").get(KvpSettings)
    runtime = Runtime("hvguest-kvpd")
    service = KvpService(paths, settings, runtime, transport=FakeTransport())
    service.auto.fqdn = Fqdn(resolve=lambda host: host, hostname=lambda: "vm1")
    try:
        service.start()
        assert service.interface_events is None
    finally:
        service.stop()
        runtime.close()
        POOLS.close_all()
