"""Application health: unit states in, KVP pool 1 items out."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import pytest

from hvguest.command import CommandResult
from hvguest.health.publish import KEY_HEALTH, KEY_REASON, HealthPublisher, pool_store
from hvguest.health.units import Health, HealthUnavailable, SystemctlProbe, evaluate
from hvguest.paths import Paths
from hvguest.pool import PoolRegistry

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()


class FakeProbe:
    def __init__(self, failed: list[str] | None = None, states: dict[str, str] | None = None):
        self.failed = failed or []
        self.states = states or {}

    def failed_units(self) -> list[str]:
        return list(self.failed)

    def unit_states(self, units: Sequence[str]) -> dict[str, str]:
        return {u: self.states.get(u, "inactive") for u in units}


@pytest.fixture(autouse=True)
def fresh_pools() -> Iterator[None]:
    yield
    POOLS.close_all()


def test_evaluate_system_wide() -> None:
    assert evaluate(FakeProbe(), []) == Health("ok", "no failed units")
    h = evaluate(FakeProbe(failed=[f"u{i}.service" for i in range(7)]), [])
    assert h.level == "degraded"
    assert h.reason == "7 failed units: u0.service, u1.service, u2.service, u3.service, " \
        "u4.service and 2 more"


def test_evaluate_configured_units() -> None:
    units = ["web.service", "db.service"]
    probe = FakeProbe(failed=["other.service"], states={"web.service": "active",
                                                          "db.service": "active"})
    assert evaluate(probe, units) == Health("ok", "2 units active")
    probe.states["db.service"] = "activating"
    assert evaluate(probe, units).level == "degraded"
    probe.states["db.service"] = "failed"
    h = evaluate(probe, units)
    assert h == Health("critical", "1 of 2 units down: db.service failed")


def test_reason_is_short() -> None:
    h = evaluate(FakeProbe(states={}), [f"a-very-long-unit-name-{i}.service" for i in range(20)])
    assert h.level == "critical" and len(h.reason) <= 200


def test_systemctl_probe_parsing() -> None:
    calls: list[list[str]] = []

    def runner(cmd: Sequence[str], timeout: float) -> CommandResult:
        calls.append(list(cmd))
        if cmd[1] == "list-units":
            return CommandResult(
                0, "foo.service loaded failed failed Foo\nbar.mount loaded failed failed Bar\n")
        return CommandResult(
            0, "Id=web.service\nActiveState=active\n\nId=db.service\nActiveState=failed\n")

    probe = SystemctlProbe(runner)
    assert probe.failed_units() == ["foo.service", "bar.mount"]
    assert probe.unit_states(["web.service", "db.service"]) == {
        "web.service": "active", "db.service": "failed"}
    assert calls[1][-2:] == ["web.service", "db.service"]

    def broken(cmd: Sequence[str], timeout: float) -> CommandResult:
        return CommandResult(
            1, "System has not been booted with systemd as init system (PID 1).\nmore")

    with pytest.raises(HealthUnavailable, match="not been booted with systemd"):
        SystemctlProbe(broken).failed_units()


def _pool_paths(tmp_path: object) -> Paths:
    d = os.path.join(str(tmp_path), "hyperv")
    os.makedirs(d)
    return Paths(pool_dir=d)


def test_publish_writes_on_change_and_after_truncation(tmp_path: object) -> None:
    paths = _pool_paths(tmp_path)
    store = pool_store(paths)
    pf = POOLS.open(paths, 1)
    pf.set("CLOUD_INIT|1|start|x", "cloud-init's own record")
    pub = HealthPublisher(store)
    assert pub.publish(Health("ok", "no failed units"))
    assert pf.get(KEY_HEALTH) == "ok" and pf.get(KEY_REASON) == "no failed units"
    size = os.path.getsize(paths.pool_file(1))
    # Unchanged: not rewritten.
    assert not pub.publish(Health("ok", "no failed units"))
    assert pub.writes == 1 and os.path.getsize(paths.pool_file(1)) == size
    # Changed: rewritten in place.
    assert pub.publish(Health("degraded", "1 failed units: x.service"))
    assert pf.get(KEY_HEALTH) == "degraded" and os.path.getsize(paths.pool_file(1)) == size
    # cloud-init truncates pool 1 at boot: republished.
    os.truncate(paths.pool_file(1), 0)
    assert pub.publish(Health("degraded", "1 failed units: x.service"))
    assert dict(pf.items()) == {KEY_HEALTH: "degraded", KEY_REASON: "1 failed units: x.service"}


def test_publish_leaves_other_keys_and_withdraw(tmp_path: object) -> None:
    paths = _pool_paths(tmp_path)
    pf = POOLS.open(paths, 1)
    pf.set("azure-init-1|vm|x", "v")
    pub = HealthPublisher(pool_store(paths))
    pub.publish(Health("critical", "db down"))
    pub.withdraw()
    assert pf.items() == [("azure-init-1|vm|x", "v")]


def test_pool_store_factory_uses_shared_registry(tmp_path: object) -> None:
    paths = _pool_paths(tmp_path)
    factory: Callable[[], object] = pool_store(paths)
    # one PoolFile (one descriptor, so one set of locks) however often it is asked
    assert factory() is factory()


# Units any local user can start or make fail: a login (user@UID.service and its
# runtime directory), a per-connection instance of an Accept=yes socket (ssh, the
# core dump handler), a session scope. None of them may make the guest "degraded".
USER_TRIGGERED = [
    "user@1000.service",
    "user-runtime-dir@1000.service",
    "sshd@3-10.0.0.1:22-10.0.0.9:4444.service",
    "systemd-coredump@0-4242-1000.service",
    "session-5.scope",
    "run-user-1000-gvfs.mount",
]


def test_user_triggered_units_do_not_degrade() -> None:
    assert evaluate(FakeProbe(failed=USER_TRIGGERED), []) == Health("ok", "no failed units")
    h = evaluate(FakeProbe(failed=[*USER_TRIGGERED, "nginx.service", "getty@tty1.service"]), [])
    assert h == Health("degraded", "2 failed units: nginx.service, getty@tty1.service")


def test_systemctl_asks_for_services_only() -> None:
    calls: list[list[str]] = []

    def runner(cmd: Sequence[str], timeout: float) -> CommandResult:
        calls.append(list(cmd))
        return CommandResult(0, "")

    SystemctlProbe(runner).failed_units()
    assert "--type=service" in calls[0] and "--system" in calls[0]


def test_configured_units_are_checked_whatever_their_kind() -> None:
    # An explicit health_units entry is the admin's choice and is always counted.
    probe = FakeProbe(states={"user@1000.service": "failed"})
    assert evaluate(probe, ["user@1000.service"]).level == "critical"
