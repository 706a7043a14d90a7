"""hvguest-kvpd at start: ``hvguest.direct`` published while direct access is on,
withdrawn when a previous run left it and direct access is now off; other keys kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_kvp_device import IdleKvpDevice

from hvguest.config import load_config_text
from hvguest.daemon import Runtime
from hvguest.daemons.kvpd import KvpService
from hvguest.direct.settings import DirectSettings
from hvguest.kvp.settings import KvpSettings
from hvguest.paths import Paths
from hvguest.pool import PoolRegistry

FakeTransport = IdleKvpDevice


@pytest.fixture
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    paths = Paths(pool_dir=str(tmp_path / "hyperv"), run=str(tmp_path / "run"))
    started: list[tuple[KvpService, Runtime, PoolRegistry]] = []

    def stop_all() -> None:
        while started:
            service, runtime, registry = started.pop()
            service.stop()
            runtime.close()
            registry.close_all()

    def run(config: str) -> dict[str, str]:
        stop_all()  # one daemon at a time, as systemd runs it
        loaded = load_config_text(config + "kvp:\n  fqdn_timeout: 0.1\n")
        registry = PoolRegistry()
        runtime = Runtime("hvguest-kvpd")
        service = KvpService(paths, loaded.get(KvpSettings), runtime,
                             transport=FakeTransport(), registry=registry,
                             direct=loaded.get(DirectSettings))
        service.start()
        started.append((service, runtime, registry))
        return dict(service.store.items(1))

    yield run
    stop_all()


def test_published_then_withdrawn(start: object) -> None:
    run = start
    assert callable(run)
    items = run("direct:\n  enabled: true\n  port: 2222\n")
    assert items["hvguest.direct"] == "ssh vsock:2222"
    assert items["hvguest.version"].startswith("hvguest ")
    items = run("direct:\n  enabled: false\n  port: 2222\n")
    assert "hvguest.direct" not in items
    assert items["hvguest.version"].startswith("hvguest ")


def test_nothing_published_by_default(start: object) -> None:
    run = start
    assert callable(run)
    assert "hvguest.direct" not in run("")
