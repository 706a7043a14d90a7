"""What every systemd unit in systemd/ promises about restarts, bytecode and, for
hvguest-kvp, its privileges. The boot test (tests/e2e) runs the installed units;
this reads the same files and fails at once when a line goes missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hvguest.daemons.common import EXIT_CONFIG

UNIT_DIR = Path(__file__).resolve().parents[3] / "systemd"
# The daemons' units (hvguest-direct@.service runs sshd: tests/unit/direct).
UNITS = sorted(p.name for p in UNIT_DIR.glob("*.service") if "@" not in p.name)


def parse(name: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (UNIT_DIR / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def words(values: list[str]) -> list[str]:
    return [w for v in values for w in v.split()]


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, f"unsupported time span {value!r}"
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_all_units_found() -> None:
    assert UNITS == [
        "hvguest-fcopy.service",
        "hvguest-heartbeat.service",
        "hvguest-kvp.service",
        "hvguest-metrics.service",
        "hvguest-shutdown-hooks.service",
        "hvguest-vss.service",
    ]


@pytest.mark.parametrize("name", UNITS)
def test_start_limit_is_reachable(name: str) -> None:
    """systemd's default (5 starts in 10 s) is never reached with RestartSec=5:
    each unit sets a window that its own restart rhythm fills."""
    unit = parse(name)
    interval = seconds(unit["Unit"]["StartLimitIntervalSec"][-1])
    burst = int(unit["Unit"]["StartLimitBurst"][-1])
    assert 1 <= burst <= 10
    restart_sec = seconds(unit["Service"].get("RestartSec", ["0"])[-1])
    # burst restarts, each RestartSec apart plus a start, fit inside the window
    assert burst * (restart_sec + 1) < interval, (name, burst, restart_sec, interval)


@pytest.mark.parametrize("name", UNITS)
def test_config_error_is_not_restarted(name: str) -> None:
    service = parse(name)["Service"]
    if "Restart" not in service:
        assert name in ("hvguest-shutdown-hooks.service", "hvguest-metrics.service")
        return
    assert str(EXIT_CONFIG) in words(service.get("RestartPreventExitStatus", [])), name


@pytest.mark.parametrize("name", UNITS)
def test_no_bytecode_written(name: str) -> None:
    assert "PYTHONDONTWRITEBYTECODE=1" in words(parse(name)["Service"].get("Environment", []))


def test_kvp_privileges() -> None:
    service = parse("hvguest-kvp.service")["Service"]
    assert service["NoNewPrivileges"] == ["true"]
    # netplan apply, ip flush: addresses, routes, links. ifup and the DHCP client it
    # starts run as transient services of their own, outside this sandbox.
    assert words(service["CapabilityBoundingSet"]) == ["CAP_NET_ADMIN"]
    assert "AF_PACKET" not in words(service["RestrictAddressFamilies"])
    assert "AmbientCapabilities" not in service


def test_kvp_writes_only_the_network_configuration_it_renders() -> None:
    """The directories hvguest.kvp.netconfig writes its one file into (renamed
    over, so the directory must be writable), and the reload tools' state. No
    ifcfg directory: nothing writes ifcfg files."""
    service = parse("hvguest-kvp.service")["Service"]
    assert service["ProtectSystem"] == ["strict"]
    writable = words(service["ReadWritePaths"])
    assert all(p.startswith("-") for p in writable), "absent stacks must not fail the start"
    assert sorted(p.lstrip("-") for p in writable) == sorted([
        "/etc/NetworkManager/system-connections",
        "/etc/systemd/network",
        "/etc/netplan",
        "/etc/network/interfaces.d",
        "/run/systemd/network",
        "/run/netplan",
        "/run/NetworkManager",
    ])


def test_vss_stop_timeout_covers_two_hook_phases() -> None:
    """A stop in the middle of a backup waits for the freeze hooks, thaws, then runs
    the thaw hooks: both phase budgets and a margin for FITHAW must fit."""
    from hvguest.vss.settings import HOOK_PHASE_MAX, UNIT_TIMEOUT_STOP

    [value] = parse("hvguest-vss.service")["Service"]["TimeoutStopSec"]
    assert seconds(value) == UNIT_TIMEOUT_STOP
    assert UNIT_TIMEOUT_STOP >= 2 * HOOK_PHASE_MAX + 20
