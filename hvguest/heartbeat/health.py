"""Application health for the host: systemd unit states -> KVP keys in pool 1.

The host reads pool 1 as the VM's GuestExchangeItems. We publish
``hvguest.health`` (ok / degraded / critical) and ``hvguest.health.reason``,
rewrite them only when they change, and put them back when they vanish
(cloud-init truncates pool 1 at boot). No other key is touched.

With no ``heartbeat.health_units`` configured, only failed *system services* count,
and never one that an unprivileged local user can start or make fail: otherwise any
user could report the VM as degraded to the host (log in and let ``user@UID.service``
fail, or open and drop an SSH connection). Not counted: every unit that is not a
service (session scopes, mounts a user asked udisks for, ...), ``user@*.service``,
``user-runtime-dir@*.service`` and the per-connection instances of ``Accept=yes``
sockets (``sshd@3-10.0.0.1:22-10.0.0.9:4444.service``,
``systemd-coredump@0-4242-1000.service``). Units named in ``health_units`` are always
checked, whatever their kind.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hvguest.heartbeat.timesync import Runner, run_command
from hvguest.paths import Paths

log = logging.getLogger(__name__)

KEY_HEALTH = "hvguest.health"
KEY_REASON = "hvguest.health.reason"
HEALTH_POOL = 1
REASON_MAX = 200  # well under the 1022-byte safe value limit

# Started per login by logind (a user can log in and make them fail).
USER_TRIGGERED_GLOBS = ("user@*.service", "user-runtime-dir@*.service")
# systemd names a per-connection instance "<prefix>@<n>-<local>-<remote>.service"
# (AF_UNIX: "<n>-<pid>-<uid>"): any local user who can connect to the socket starts one.
_PER_CONNECTION = re.compile(r"^[^@]+@[0-9]+-.+\.service$")


class HealthUnavailable(Exception):
    """The unit states cannot be read (no systemd, systemctl failed)."""


class UnitProbe(Protocol):
    def failed_units(self) -> list[str]: ...

    def unit_states(self, units: Sequence[str]) -> dict[str, str]:
        """unit -> ActiveState (active, failed, inactive, activating, ...)."""
        ...


class SystemctlProbe:
    """Asks systemctl; ``runner`` is injectable (tests feed canned output)."""

    def __init__(self, runner: Runner = run_command, timeout: float = 10.0) -> None:
        self.runner = runner
        self.timeout = timeout

    def _run(self, args: list[str]) -> str:
        rc, out = self.runner(["systemctl", *args], self.timeout)
        if rc != 0:
            first = out.strip().splitlines()[0] if out.strip() else "no output"
            raise HealthUnavailable(f"systemctl {args[0]} failed ({rc}): {first[:200]}")
        return out

    def failed_units(self) -> list[str]:
        out = self._run(["list-units", "--system", "--type=service", "--state=failed",
                         "--no-legend", "--plain", "--no-pager"])
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def unit_states(self, units: Sequence[str]) -> dict[str, str]:
        out = self._run(["show", "--no-pager", "-p", "Id,ActiveState", "--", *units])
        states: dict[str, str] = {}
        current: dict[str, str] = {}
        for line in [*out.splitlines(), ""]:
            if not line.strip():
                if "Id" in current:
                    states[current["Id"]] = current.get("ActiveState", "unknown")
                current = {}
                continue
            key, _, value = line.partition("=")
            current[key] = value
        # systemctl show answers in the order asked; Id may be an alias's target.
        by_order = list(states.values())
        if len(by_order) == len(units) and not all(u in states for u in units):
            return dict(zip(units, by_order, strict=True))
        return {u: states.get(u, "unknown") for u in units}


@dataclass(frozen=True)
class Health:
    level: str  # ok / degraded / critical
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "reason": self.reason}


def _short(text: str) -> str:
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 3] + "..."


def _names(units: Sequence[str]) -> str:
    shown = ", ".join(units[:5])
    return shown + (f" and {len(units) - 5} more" if len(units) > 5 else "")


def counts_for_health(unit: str) -> bool:
    """A system service that only root (or systemd itself) starts: see the module doc."""
    if not unit.endswith(".service"):
        return False
    if any(fnmatch.fnmatchcase(unit, glob) for glob in USER_TRIGGERED_GLOBS):
        return False
    return not _PER_CONNECTION.match(unit)


def evaluate(probe: UnitProbe, units: Sequence[str]) -> Health:
    """Configured units: any not active -> critical (activating -> degraded).
    None configured: any failed system service a user cannot fail -> degraded."""
    if units:
        states = probe.unit_states(units)
        down = [u for u in units if states.get(u) not in ("active", "activating", "reloading")]
        starting = [u for u in units if states.get(u) in ("activating", "reloading")]
        if down:
            detail = ", ".join(f"{u} {states.get(u, 'unknown')}" for u in down[:5])
            return Health("critical", _short(f"{len(down)} of {len(units)} units down: {detail}"))
        if starting:
            return Health("degraded", _short(f"starting: {_names(starting)}"))
        return Health("ok", _short(f"{len(units)} units active"))
    failed = [u for u in probe.failed_units() if counts_for_health(u)]
    if failed:
        return Health("degraded", _short(f"{len(failed)} failed units: {_names(failed)}"))
    return Health("ok", "no failed units")


class KvpStore(Protocol):
    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> Any: ...


StoreFactory = Callable[[], KvpStore]


def pool_store(paths: Paths, pool: int = HEALTH_POOL) -> StoreFactory:
    """Opens the shared pool store (same locks as every other pool writer)."""

    registry: list[Any] = []  # the process's PoolRegistry, made on first use

    def factory() -> KvpStore:
        from hvguest.pool import PoolRegistry  # the KVP pool module; imported late

        if not registry:
            registry.append(PoolRegistry())
        store: KvpStore = registry[0].open(paths, pool)
        return store

    return factory


class HealthPublisher:
    """Keeps our two keys in pool 1 equal to the last evaluation."""

    def __init__(self, store: StoreFactory) -> None:
        self.store = store
        self.writes = 0

    def publish(self, health: Health) -> bool:
        """True when something was written (changed or missing)."""
        pool = self.store()
        wrote = False
        for key, value in ((KEY_HEALTH, health.level), (KEY_REASON, health.reason)):
            if pool.get(key) != value:
                pool.set(key, value)
                wrote = True
        if wrote:
            self.writes += 1
            log.info("published health %s (%s) in KVP pool %d", health.level, health.reason,
                     HEALTH_POOL)
        return wrote

    def withdraw(self) -> None:
        """Remove our keys (health unknown: say nothing rather than something stale)."""
        pool = self.store()
        for key in (KEY_HEALTH, KEY_REASON):
            if pool.get(key) is not None:
                pool.delete(key)
