"""hvguest-heartbeatd: polls on fixture trees, throttled logging, health in pool 1,
configuration errors, sd_notify."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from hvguest.daemons import heartbeatd
from hvguest.daemons.common import EXIT_CONFIG
from hvguest.daemons.heartbeatd import HeartbeatDaemon
from hvguest.health.publish import KEY_HEALTH, KEY_REASON
from hvguest.health.units import HealthUnavailable
from hvguest.heartbeat.settings import HeartbeatSettings
from hvguest.paths import Paths
from hvguest.pool import PoolRegistry
from hvguest.state import read_state

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()

HB = "fd149e91-82e0-4a7d-afa6-2a4166cbd7c0"
HB_RELID = 9


class FakeProbe:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.broken = False

    def failed_units(self) -> list[str]:
        if self.broken:
            raise HealthUnavailable("systemctl list-units failed (1): no bus")
        return list(self.failed)

    def unit_states(self, units: Sequence[str]) -> dict[str, str]:
        return {u: "active" for u in units}


class FakeClock:
    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def sample(self) -> tuple[float, float, float]:
        return 100.0, 100.0 - self.offset, 100.0

    def close(self) -> None:
        pass


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def fresh_pools() -> Iterator[None]:
    yield
    POOLS.close_all()


def make(paths: Paths, **settings: Any) -> tuple[HeartbeatDaemon, FakeProbe, FakeClock, Mono]:
    os.makedirs(paths.pool_dir, exist_ok=True)
    probe, clock, mono = FakeProbe(), FakeClock(), Mono()
    d = HeartbeatDaemon(paths, HeartbeatSettings(**settings), probe=probe,
                        clock_opener=lambda dev: clock, monotonic=mono)
    return d, probe, clock, mono


def test_poll_publishes_state_and_health(machine: Callable[..., Paths], builder: Any) -> None:
    paths = machine()
    d, probe, clock, mono = make(paths)
    d.poll()
    doc = read_state(paths, "heartbeat")
    assert doc is not None and doc["service"] == "heartbeat" and doc["state"] == "running"
    det = doc["details"]
    assert det["heartbeat"]["offered"] and det["heartbeat"]["driver"] == "hv_utils"
    assert det["heartbeat"]["contact"] == "unknown"  # one reading: nothing to compare yet
    assert det["shutdown"]["offered"] and det["shutdown"]["hooks"] == 0
    assert det["timesync"]["offset_ms"] == 0 and det["timesync"]["ptp_clock"] == "ptp0"
    assert det["health"] == {"level": "ok", "reason": "no failed units", "published": True}
    pf = POOLS.open(paths, 1)
    assert pf.get(KEY_HEALTH) == "ok" and pf.get(KEY_REASON) == "no failed units"
    assert doc["last_op"]["op"] == "health" and doc["last_op"]["result"] == "ok"
    # A unit fails: the host sees "degraded".
    probe.failed = ["backup.service"]
    d.poll()
    assert pf.get(KEY_HEALTH) == "degraded"
    assert pf.get(KEY_REASON) == "1 failed units: backup.service"


def test_health_republished_after_pool_truncated(machine: Callable[..., Paths]) -> None:
    paths = machine()
    d, *_ = make(paths)
    d.poll()
    os.truncate(paths.pool_file(1), 0)
    d.poll()
    assert POOLS.open(paths, 1).get(KEY_HEALTH) == "ok"


def test_liveness_and_no_contact(machine: Callable[..., Paths], builder: Any,
                                 caplog: pytest.LogCaptureFixture) -> None:
    paths = machine()
    d, _, _, mono = make(paths, stall_threshold=3, log_period=600)
    caplog.set_level(logging.INFO)
    d.poll()
    builder.set_counter(paths, HB, HB_RELID, "interrupts", 60)
    d.poll()
    doc = read_state(paths, "heartbeat")
    assert doc is not None and doc["details"]["heartbeat"]["contact"] == "contact"
    for _ in range(3):
        mono.t += 10
        d.poll()
    doc = read_state(paths, "heartbeat")
    assert doc is not None and doc["state"] == "no contact"
    assert doc["details"]["heartbeat"]["contact"] == "no-contact"
    assert "no contact" in doc["last_error"]["message"]
    # Thirty more stalled polls within the period: still one warning.
    for _ in range(30):
        mono.t += 10
        d.poll()
    warnings = [r for r in caplog.records if "no contact" in r.getMessage()]
    assert len(warnings) == 1
    # After the period: logged again, with the count of repeats not logged.
    mono.t += 600
    d.poll()
    warnings = [r for r in caplog.records if "no contact" in r.getMessage()]
    assert len(warnings) == 2 and "repeats not logged" in warnings[1].getMessage()
    # Counters move again: contact restored, error cleared.
    builder.set_counter(paths, HB, HB_RELID, "interrupts", 61)
    d.poll()
    doc = read_state(paths, "heartbeat")
    assert doc is not None and doc["state"] == "running" and doc["last_error"] is None
    assert any("restored" in r.getMessage() for r in caplog.records)


def test_repeating_failures_logged_once_per_period(machine: Callable[..., Paths],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    paths = machine()
    d, probe, clock, mono = make(paths, log_period=300, timesync_warn_offset_ms=50)
    probe.broken = True
    clock.offset = 0.2
    caplog.set_level(logging.INFO)
    for _ in range(20):
        mono.t += 10
        d.poll()
    health = [r for r in caplog.records if "application health unknown" in r.getMessage()]
    offset = [r for r in caplog.records if "ms off the host" in r.getMessage()]
    assert len(health) == 1 and len(offset) == 1
    doc = read_state(paths, "heartbeat")
    assert doc is not None and doc["details"]["health"] is None
    assert POOLS.open(paths, 1).get(KEY_HEALTH) is None  # withdrawn, not stale
    probe.broken = False
    clock.offset = 0.0
    mono.t += 10
    d.poll()
    doc = read_state(paths, "heartbeat")
    assert doc is not None and doc["details"]["timesync"]["offset_exceeded"] is False
    assert doc["details"]["health"]["level"] == "ok"
    assert d.failing == {"heartbeat-contact"}  # the fixture's counters never move


def test_no_service_manager_no_health(machine: Callable[..., Paths]) -> None:
    paths = machine(systemd_pid1=False)
    os.makedirs(paths.pool_dir, exist_ok=True)
    d = HeartbeatDaemon(paths, HeartbeatSettings(), clock_opener=lambda dev: FakeClock())
    d.poll()
    doc = read_state(paths, "heartbeat")
    assert doc is not None and doc["details"]["health"] is None and doc["last_error"] is None
    assert POOLS.open(paths, 1).get(KEY_HEALTH) is None


def test_channel_absent(machine: Callable[..., Paths]) -> None:
    paths = machine(omit=["heartbeat", "timesync"])
    d, *_ = make(paths)
    d.poll()
    doc = read_state(paths, "heartbeat")
    assert doc is not None
    assert doc["details"]["heartbeat"]["offered"] is False
    assert doc["details"]["timesync"] == {"offered": False, "driver": None}
    assert "does not offer the Heartbeat" in doc["last_error"]["message"]


def test_malformed_config_one_line_naming_the_line(tmp_path: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = os.path.join(str(tmp_path), "hvguest.yaml")
    with open(cfg, "w") as f:
        f.write("heartbeat:\n  poll_interval: 10\n  stall_threshold: lots\n")
    assert heartbeatd.main(["--config", cfg, "--run-dir", str(tmp_path)]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{cfg}:3:" in err and "stall_threshold" in err
    with open(cfg, "w") as f:
        f.write("heartbeat:\n  poll_intervall: 10\n")
    assert heartbeatd.main(["--config", cfg]) == EXIT_CONFIG
    assert f"{cfg}:2:" in capsys.readouterr().err


def test_not_hyperv_exits_zero(tmp_path: Any, builder: Any) -> None:
    paths = builder.build_non_hyperv(str(tmp_path))
    assert heartbeatd.main(["--sys-root", paths.sys, "--run-dir", paths.run]) == 0
    assert read_state(paths, "heartbeat") is None


def test_once_mode(machine: Callable[..., Paths]) -> None:
    paths = machine()
    root = os.path.dirname(paths.sys)
    args = ["--once", "--sys-root", paths.sys, "--dev-root", paths.dev, "--run-dir", paths.run,
            "--proc-root", paths.proc, "--pool-dir", paths.pool_dir, "--etc-dir", paths.etc,
            "--os-etc-dir", os.path.join(root, "etc")]
    heartbeatd.HeartbeatDaemon.__init__.__defaults__  # noqa: B018 - sanity: importable
    assert heartbeatd.main(args) == 0
    assert read_state(paths, "heartbeat") is not None


def _wait_for(path: str, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            content = f.read()
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}: {content}")


def test_service_ready_reload_and_orderly_stop(machine: Callable[..., Paths],
                                               tmp_path: Any) -> None:
    """The real daemon process: READY=1 with STATUS=; SIGHUP reloads the configuration
    (a broken one is refused and the old one kept); SIGTERM -> exit 0, state stopped."""
    paths = machine()
    os.makedirs(paths.pool_dir, exist_ok=True)
    cfg = os.path.join(str(tmp_path), "hvguest.yaml")
    with open(cfg, "w") as f:
        f.write("heartbeat:\n  poll_interval: 5\n")
    errlog = os.path.join(str(tmp_path), "stderr.log")
    sock_path = os.path.join(str(tmp_path), "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    env.pop("INVOCATION_ID", None)
    env.pop("JOURNAL_STREAM", None)
    with open(errlog, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hvguest.daemons.heartbeatd", "--config", cfg,
             "--sys-root", paths.sys, "--dev-root", paths.dev, "--run-dir", paths.run,
             "--proc-root", paths.proc, "--pool-dir", paths.pool_dir, "--etc-dir", paths.etc],
            env=env, stderr=err,
        )
    try:
        msg = sock.recv(4096).decode()
        while "READY=1" not in msg:
            msg = sock.recv(4096).decode()
        assert "STATUS=host contact" in msg
        doc = read_state(paths, "heartbeat")
        assert doc is not None and doc["pid"] == proc.pid
        with open(cfg, "w") as f:
            f.write("heartbeat:\n  poll_interval: never\n")
        proc.send_signal(signal.SIGHUP)
        _wait_for(errlog, f"configuration not reloaded, keeping the old one: {cfg}:2:")
        with open(cfg, "w") as f:
            f.write("heartbeat:\n  poll_interval: 2\n")
        proc.send_signal(signal.SIGHUP)
        _wait_for(errlog, "configuration reloaded")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    doc = read_state(paths, "heartbeat")
    assert doc is not None and doc["state"] == "stopped"
