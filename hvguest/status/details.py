"""The service-specific part of each status entry, and the problems found in it.

kvp, vss and fcopy: what their daemon published, with the pool-lock and freeze
problems; heartbeat, shutdown and time sync: what hvguest-heartbeatd published,
the pre-shutdown hooks on disk and the host clock measured now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hvguest.paths import Paths
from hvguest.shutdown import hooks as shutdown_hooks
from hvguest.status.document import Problem, PublishedState
from hvguest.timesync.check import TimesyncStatus
from hvguest.vmbus.inventory import VmbusDevice


@dataclass(frozen=True)
class DetailsContext:
    paths: Paths
    timesync_check: Callable[[Paths], TimesyncStatus]


def service_details(
    ctx: DetailsContext,
    service: str,
    dev: VmbusDevice | None,
    doc: PublishedState | None,
    problems: list[Problem],
) -> dict[str, Any]:
    published = dict((doc or {}).get("details") or {})
    if service == "kvp":
        pools = published.get("pools", {})
        problems.extend(_pool_lock_problems(pools))
        return {"pools": pools, **_without(published, "pools")}
    if service == "vss":
        frozen = bool(published.get("frozen"))
        if frozen:
            problems.append(
                Problem(
                    service, "info", "filesystems are frozen now (a checkpoint is in progress)"
                )
            )
        return {"frozen": frozen, **_without(published, "frozen")}
    if service == "fcopy":
        transport = published.get("transport") or (
            "uio"
            if dev is not None and dev.driver == "uio_hv_generic"
            else "legacy"
            if dev is not None and dev.driver == "hv_utils"
            else None
        )
        return {
            "transport": transport,
            "in_progress": published.get("in_progress"),
            **_without(published, "transport", "in_progress"),
        }
    hb: dict[str, Any] = published.get(service) or {}
    if service == "heartbeat":
        return _heartbeat_details(dev, doc, hb, problems)
    if service == "shutdown":
        return _shutdown_details(ctx.paths, hb, problems)
    return _timesync_details(ctx, dev, hb, problems)


def _heartbeat_details(
    dev: VmbusDevice | None,
    doc: PublishedState | None,
    hb: dict[str, Any],
    problems: list[Problem],
) -> dict[str, Any]:
    primary = dev.primary if dev is not None else None
    out = {
        "interrupts": primary.counters.get("interrupts") if primary else None,
        "events": primary.counters.get("events") if primary else None,
        "contact": hb.get("contact"),
        "last_contact": hb.get("last_contact"),
        "health": (doc or {}).get("details", {}).get("health"),
    }
    if dev is not None and hb.get("contact") == "no-contact":
        problems.append(
            Problem(
                "heartbeat",
                "warning",
                f"no heartbeat from the host since {hb.get('last_contact')}",
                "check the VM's Heartbeat service on the host",
            )
        )
    health = out["health"]
    if isinstance(health, dict) and health.get("level") in ("degraded", "critical"):
        problems.append(
            Problem(
                "heartbeat",
                "warning",
                f"application health {health['level']}: {health.get('reason', '')}",
                "systemctl --failed",
            )
        )
    return out


def _shutdown_details(
    paths: Paths, hb: dict[str, Any], problems: list[Problem]
) -> dict[str, Any]:
    hooks = shutdown_hooks.list_hooks(paths)
    for hook in hooks:
        if not hook.usable:
            problems.append(
                Problem(
                    "shutdown",
                    "warning",
                    f"shutdown hook {hook.path} will be skipped: {hook.problem}",
                    f"chown root:root {hook.path}; chmod 0755 {hook.path}",
                )
            )
    last = shutdown_hooks.load_results(paths)
    if last:
        results = last.get("results")
        bad = [
            r
            for r in (results if isinstance(results, list) else [])
            if isinstance(r, dict) and r.get("result") in ("failed", "timeout")
        ]
        for r in bad:
            problems.append(
                Problem(
                    "shutdown",
                    "warning",
                    f"shutdown hook {r.get('hook')} {r.get('result')} "
                    f"at the last shutdown: {r.get('detail', '')}"[:300],
                )
            )
    return {
        "hook_dir": shutdown_hooks.hook_dir(paths),
        "hooks": [{"name": h.name, "usable": h.usable, "problem": h.problem} for h in hooks],
        "last_run": last,
    }


def _timesync_details(
    ctx: DetailsContext, dev: VmbusDevice | None, hb: dict[str, Any], problems: list[Problem]
) -> dict[str, Any]:
    if dev is None:
        return {}
    st = ctx.timesync_check(ctx.paths)
    live = st.as_dict()
    source = "measured"
    if st.offset_ms is None and hb.get("offset_ms") is not None:
        # We could not read the clock ourselves (not root): use the daemon's reading.
        live.update({k: hb.get(k) for k in ("offset_ms", "delay_ms", "offset_exceeded")})
        live["measured_at"] = hb.get("measured_at")
        source = "daemon"
        if st.error:
            live["read_error"] = None
    live["source"] = source if live.get("offset_ms") is not None else None
    if st.ptp is None and dev.driver == "hv_utils":
        problems.append(
            Problem(
                "timesync",
                "warning",
                "no PTP clock named 'hyperv' although hv_utils is bound",
                "the kernel needs CONFIG_PTP_1588_CLOCK; check dmesg",
            )
        )
    if live.get("read_error"):
        problems.append(Problem("timesync", "warning", str(live["read_error"])))
    if live.get("offset_exceeded"):
        problems.append(
            Problem(
                "timesync",
                "warning",
                f"guest clock is {live['offset_ms']:+.1f} ms off the host's "
                f"(limit {st.warn_offset_ms:g} ms)",
                "hvguestctl timesync setup (chrony with the host clock as refclock)",
            )
        )
    state = live.get("chrony_source_state")
    if st.chrony_refclock and state not in (None, "selected", "combined"):
        problems.append(
            Problem(
                "timesync",
                "warning",
                f"chrony is configured to use the host clock but its source is {state}",
                "chronyc sources -v; journalctl -u chrony",
            )
        )
    if st.ptp is not None and not st.chrony_refclock:
        clients = ", ".join(st.ntp_clients) or "none running"
        problems.append(
            Problem(
                "timesync",
                "info",
                f"no NTP client uses the host clock (NTP clients: {clients})",
                "hvguestctl timesync setup",
            )
        )
    return live


def _pool_lock_problems(pools: object) -> list[Problem]:
    """A pool whose lock another process held past the daemon's bounded wait."""
    out: list[Problem] = []
    if not isinstance(pools, dict):
        return out
    for n, entry in sorted(pools.items()):
        holder = entry.get("lock_holder") if isinstance(entry, dict) else None
        if not isinstance(holder, dict):
            continue
        user = holder.get("user") or f"uid {holder.get('uid')}"
        command = f", command {holder.get('command')!r}" if holder.get("command") else ""
        out.append(Problem(
            "kvp", "warning",
            f"pool {n}: host requests failed at {holder.get('time')}: {holder.get('lock')} held"
            f" by pid {holder.get('pid')} (user {user}{command})",
            "see why that process holds the pool file's lock; stop it if it should not",
        ))
    return out


def _without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}
