"""Config section "heartbeat" (hvguest-heartbeatd and the status commands)."""

from __future__ import annotations

from dataclasses import dataclass

from hvguest.configschema import config_section, setting

# hvguest-shutdown-hooks.service: TimeoutStopSec=120 for the whole ExecStop (a shell,
# two systemctl calls, Python's start-up, then the hooks): 10 s are kept for those.
UNIT_TIMEOUT_STOP = 120.0
SHUTDOWN_HOOKS_MAX = 110.0


def _unit_names(value: list[str]) -> str | None:
    for name in value:
        if not name or "/" in name or any(c.isspace() for c in name):
            return f"not a systemd unit name: {name!r}"
    return None


@config_section("heartbeat", help="Heartbeat, application health, shutdown hooks and time sync")
@dataclass(frozen=True)
class HeartbeatSettings:
    poll_interval: float = setting(
        10.0, help="seconds between checks of the channels, health and clock", min=1, max=3600
    )
    stall_threshold: int = setting(
        3,
        help="polls without heartbeat interrupts before warning 'no contact with the host'",
        min=1,
        max=1000,
    )
    log_period: float = setting(
        600.0, help="a repeating failure is logged at most once per this many seconds",
        min=1, max=86400,
    )
    health_units: list[str] = setting(
        [],
        help=(
            "systemd units whose failure makes the guest 'critical' for the host;\n"
            "empty: a failed system service makes it 'degraded', except the units any\n"
            "local user can start or fail (user@*.service, user-runtime-dir@*.service,\n"
            "per-connection socket instances such as sshd@N-...service) and non-services"
        ),
        validate=_unit_names,
    )
    publish_health: bool = setting(
        True, help="publish hvguest.health and hvguest.health.reason in KVP pool 1"
    )
    timesync_warn_offset_ms: float = setting(
        100.0, help="warn when the guest clock differs from the host's by more (ms)",
        min=0.001, max=86_400_000,
    )
    shutdown_hook_timeout: float = setting(
        30.0, help="seconds each pre-shutdown hook may run", min=1, max=SHUTDOWN_HOOKS_MAX
    )
    shutdown_total_timeout: float = setting(
        90.0,
        help=(
            "seconds all pre-shutdown hooks together may run, kills included; at most\n"
            "110: hvguest-shutdown-hooks.service stops them after TimeoutStopSec=120"
        ),
        min=1,
        max=SHUTDOWN_HOOKS_MAX,
    )
    chrony_restart_timeout: float = setting(
        20.0, help="seconds 'hvguestctl timesync setup' waits for chrony to restart",
        min=1, max=600,
    )
