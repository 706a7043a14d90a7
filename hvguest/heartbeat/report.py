"""The status report behind ``hvguestctl status``: one document, six services.

For each integration service: does the host offer it (VMBus device present),
is the kernel driver bound (hv_utils, or uio_hv_generic for fcopy on >= 6.10),
is the hvguest daemon running, and what it last did. Problems carry a remedy
sentence. The document's shape is docs/status-json.md (schema
hvguest/heartbeat/status_schema.json); bump SCHEMA_VERSION on incompatible
changes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hvguest.heartbeat import kmsg, timesync
from hvguest.heartbeat import shutdown as shutdown_hooks
from hvguest.heartbeat.inventory import Inventory, VmbusDevice, scan
from hvguest.heartbeat.timesync import Runner, run_command
from hvguest.paths import Paths
from hvguest.state import pid_alive, state_file, utc_now

SCHEMA_VERSION = 1
SERVICES = ("heartbeat", "shutdown", "timesync", "kvp", "vss", "fcopy")
# Names in Get-VMIntegrationService.
HOST_NAMES = {
    "heartbeat": "Heartbeat",
    "shutdown": "Shutdown",
    "timesync": "Time Synchronization",
    "kvp": "Key-Value Pair Exchange",
    "vss": "VSS",
    "fcopy": "Guest Service Interface",
}
# The kernel answers heartbeat, shutdown and time sync; hvguest-heartbeatd watches them.
DAEMON = {
    "heartbeat": "heartbeat",
    "shutdown": "heartbeat",
    "timesync": "heartbeat",
    "kvp": "kvp",
    "vss": "vss",
    "fcopy": "fcopy",
}
# Character devices of the kernel transport (fcopy's only up to 6.9).
CHARDEV = {"kvp": "hv_kvp", "vss": "hv_vss"}
# Reference C daemons that would hold our device (comm is cut at 15 characters).
REFERENCE_DAEMONS = {
    "kvp": ("hv_kvp_daemon", "hv-kvp-daemon (Debian) or hypervkvpd (RHEL)"),
    "vss": ("hv_vss_daemon", "hv-vss-daemon (Debian) or hypervvssd (RHEL)"),
    "fcopy": ("hv_fcopy_daemon", "hv-fcopy-daemon (Debian) or hypervfcopyd (RHEL)"),
}
FCOPY_UIO_COMM = "hv_fcopy_uio_da"

LEVEL_EXIT = {"ok": 0, "error": 1, "degraded": 2, "not-hyperv": 0}


def unit_name(daemon: str) -> str:
    return f"hvguest-{daemon}.service"


def program_name(daemon: str) -> str:
    return f"hvguest-{daemon}d"


def enable_remedy(service: str) -> str:
    return (
        f"Enable-VMIntegrationService -VMName <vm> -Name '{HOST_NAMES[service]}' "
        "(on the Hyper-V host)"
    )


@dataclass(frozen=True)
class Problem:
    service: str
    severity: str  # error / warning / info
    message: str
    remedy: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "message": self.message, "remedy": self.remedy}


# -- process and unit state ---------------------------------------------------------


def systemd_running(paths: Paths) -> bool:
    """PID 1 is systemd (read from <proc>/1/comm)."""
    try:
        with open(os.path.join(paths.proc, "1", "comm"), encoding="utf-8") as f:
            return f.read().strip() == "systemd"
    except OSError:
        return False


def _mount_ns(paths: Paths, pid: str) -> str | None:
    try:
        return os.readlink(os.path.join(paths.proc, pid, "ns", "mnt"))
    except OSError:
        return None


def process_names(paths: Paths) -> set[str]:
    """Names of the processes that can hold our devices: those in our mount namespace
    (a daemon in a container sees another /dev), or whose namespace we cannot see."""
    names: set[str] = set()
    try:
        entries = os.listdir(paths.proc)
    except OSError:
        return names
    own = _mount_ns(paths, "self")
    for entry in entries:
        if entry.isdigit():
            ns = _mount_ns(paths, entry) if own is not None else None
            if ns is not None and ns != own:
                continue
            with contextlib.suppress(OSError):
                with open(os.path.join(paths.proc, entry, "comm"), encoding="utf-8") as f:
                    names.add(f.read().strip())
    return names


def unit_state(unit: str, runner: Runner) -> tuple[str, str] | None:
    rc, out = runner(["systemctl", "show", "--no-pager", "-p", "ActiveState,SubState", unit], 5.0)
    if rc != 0:
        return None
    values = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    return values.get("ActiveState", "unknown"), values.get("SubState", "unknown")


def _read_state(paths: Paths, daemon: str, unreadable: list[str]) -> dict[str, Any] | None:
    path = state_file(paths, daemon)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        unreadable.append(f"{path}: {exc.strerror}")
        return None
    except (OSError, ValueError) as exc:
        unreadable.append(f"{path}: {exc}")
        return None
    return doc if isinstance(doc, dict) else None


def daemon_info(
    paths: Paths,
    daemon: str,
    doc: dict[str, Any] | None,
    use_systemd: bool,
    runner: Runner,
    unreadable_state: bool = False,
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": program_name(daemon),
        "unit": unit_name(daemon),
        "running": False,
        "source": "none",
        "active_state": None,
        "sub_state": None,
        "pid": doc.get("pid") if doc else None,
        "state": doc.get("state") if doc else None,
        "started": doc.get("started") if doc else None,
        "updated": doc.get("updated") if doc else None,
        "version": doc.get("version") if doc else None,
        "stale_state": False,
    }
    if use_systemd:
        st = unit_state(unit_name(daemon), runner)
        if st is not None:
            info["source"] = "systemd"
            info["active_state"], info["sub_state"] = st
            info["running"] = st[0] in ("active", "reloading")
    if info["source"] == "none" and doc is not None:
        info["source"] = "pid"
        info["running"] = pid_alive(paths, doc.get("pid"))
    elif info["source"] == "none" and unreadable_state:
        info["source"] = "unreadable"
    if doc is not None and not info["running"]:
        info["stale_state"] = True
    return info


# -- per service ------------------------------------------------------------------------


def _osrelease(paths: Paths) -> str | None:
    try:
        with open(os.path.join(paths.proc, "sys", "kernel", "osrelease"), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def _kernel_at_least(release: str | None, major: int, minor: int) -> bool | None:
    if not release:
        return None
    parts = release.split(".")
    try:
        return (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)) >= (
            major,
            minor,
        )
    except (IndexError, ValueError):
        return None


def _driver_problem(service: str, dev: VmbusDevice, paths: Paths) -> Problem | None:
    if service == "fcopy":
        if dev.driver in ("hv_utils", "uio_hv_generic"):
            return None
        new = _kernel_at_least(_osrelease(paths), 6, 10)
        if new is False:
            remedy = "modprobe hv_utils"
        else:
            # The unit's ExecStartPre runs the one binding tool; by hand, the same one.
            remedy = (
                "systemctl start hvguest-fcopy.service (its hvguest-uio-bind binds "
                "uio_hv_generic), or as root: hvguest-uio-bind"
            )
        return Problem(service, "error", f"fcopy device {dev.instance} has no driver bound", remedy)
    if dev.driver == "hv_utils":
        return None
    if dev.driver is None:
        return Problem(
            service,
            "error",
            f"{service} device {dev.instance} has no driver bound (hv_utils not loaded?)",
            "modprobe hv_utils",
        )
    return Problem(
        service, "warning", f"{service} device is bound to {dev.driver}, expected hv_utils"
    )


def _proto_version(doc: dict[str, Any] | None) -> str | None:
    if not doc:
        return None
    details = doc.get("details") or {}
    for source in (details, doc):
        for key in ("protocol_version", "negotiated_version", "protocol"):
            value = source.get(key)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return str(value)
    return None


class Collector:
    """Builds the status document. Every outside fact is injectable."""

    def __init__(
        self,
        paths: Paths,
        *,
        runner: Runner = run_command,
        use_systemd: bool | None = None,
        timesync_check: Callable[[Paths], timesync.TimesyncStatus] | None = None,
        warn_offset_ms: float = 100.0,
        now: Callable[[], str] = utc_now,
    ) -> None:
        self.paths = paths
        self.runner = runner
        self.use_systemd = systemd_running(paths) if use_systemd is None else use_systemd
        self.timesync_check = timesync_check or (
            lambda p: timesync.check(p, warn_offset_ms=warn_offset_ms)
        )
        self.now = now
        self.kernel_versions: dict[str, str] = {}

    def collect(self) -> dict[str, Any]:
        paths = self.paths
        inv = scan(paths)
        unreadable = list(inv.unreadable)
        doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "generated": self.now(),
            "hyperv": inv.present,
            "overall": "ok",
            "exit_code": 0,
            "summary": "",
            "vmbus_devices": len(inv.devices),
            "systemd": self.use_systemd,
            "unreadable": unreadable,
            "problems": [],
            "services": {},
        }
        if not inv.present:
            doc["overall"] = "not-hyperv"
            doc["summary"] = f"not a Hyper-V guest ({inv.root} does not exist): nothing to do"
            for service in SERVICES:
                doc["services"][service] = self._absent_entry(service)
            return doc
        self.kernel_versions = kmsg.ic_versions(paths, unreadable)
        states = {d: _read_state(paths, d, unreadable) for d in sorted(set(DAEMON.values()))}
        daemons = {
            d: daemon_info(
                paths,
                d,
                states[d],
                self.use_systemd,
                self.runner,
                any(u.startswith(state_file(paths, d) + ":") for u in unreadable),
            )
            for d in states
        }
        procs = process_names(paths)
        problems: list[Problem] = []
        for service in SERVICES:
            entry, found = self._service(service, inv, states, daemons, procs)
            doc["services"][service] = entry
            problems.extend(found)
        doc["problems"] = [{"service": p.service, **p.as_dict()} for p in problems]
        severities = {p.severity for p in problems}
        overall = (
            "error" if "error" in severities else ("degraded" if "warning" in severities else "ok")
        )
        doc["overall"] = overall
        doc["exit_code"] = LEVEL_EXIT[overall]
        count = sum(1 for p in problems if p.severity in ("error", "warning"))
        doc["summary"] = (
            f"{overall}: {len(inv.devices)} VMBus devices, "
            f"{count} problem{'s' if count != 1 else ''}"
        )
        return doc

    # -- entries -------------------------------------------------------------------------

    def _absent_entry(self, service: str) -> dict[str, Any]:
        return {
            "host_name": HOST_NAMES[service],
            "health": "absent",
            "offered": False,
            "device": None,
            "driver": None,
            "driver_bound": False,
            "daemon": None,
            "protocol_version": None,
            "last_op": None,
            "recent": [],
            "last_error": None,
            "problems": [],
            "details": {},
        }

    def _service(
        self,
        service: str,
        inv: Inventory,
        states: dict[str, dict[str, Any] | None],
        daemons: dict[str, dict[str, Any]],
        procs: set[str],
    ) -> tuple[dict[str, Any], list[Problem]]:
        dev = inv.service_device(service)
        daemon = DAEMON[service]
        doc = states[daemon]
        dinfo = daemons[daemon]
        own = daemon == service  # the service's own daemon, not the watcher
        entry = self._absent_entry(service)
        entry["daemon"] = dinfo
        if own and doc is not None:
            entry["protocol_version"] = _proto_version(doc)
            entry["last_op"] = doc.get("last_op")
            entry["recent"] = doc.get("recent") or []
            entry["last_error"] = doc.get("last_error")
        if entry["protocol_version"] is None and dev is not None:
            # Kernel-answered services (and daemons that do not publish one): the kernel log.
            entry["protocol_version"] = self.kernel_versions.get(service)
        problems: list[Problem] = []
        if dev is None:
            entry["health"] = "off"
            msg = f"the host does not offer {HOST_NAMES[service]}"
            if service == "vss":
                msg = (
                    "VSS: hv_vss device missing: enable 'Backup (volume shadow copy)' in "
                    "the VM's integration services; production checkpoints need it"
                )
            elif service == "fcopy":
                msg = "Guest Service Interface is disabled on the host: Copy-VMFile cannot work"
            problems.append(Problem(service, "info", msg, enable_remedy(service)))
        else:
            entry["offered"] = True
            entry["device"] = {
                "instance": dev.instance,
                "vmbus_id": dev.vmbus_id,
                "state": dev.state,
                "uio": dev.uio,
            }
            entry["driver"] = dev.driver
            bad = _driver_problem(service, dev, self.paths)
            entry["driver_bound"] = bad is None or bad.severity != "error"
            if bad:
                problems.append(bad)
            problems.extend(self._chardev_problems(service, dev, procs))
            problems.extend(self._daemon_problems(service, dinfo, doc, own))
        details = self._details(service, dev, doc, problems)
        entry["details"] = details
        entry["problems"] = [p.as_dict() for p in problems]
        severities = {p.severity for p in problems}
        if dev is not None:
            entry["health"] = (
                "error"
                if "error" in severities
                else "degraded"
                if "warning" in severities
                else "ok"
            )
        return entry, problems

    def _chardev_problems(self, service: str, dev: VmbusDevice, procs: set[str]) -> list[Problem]:
        out: list[Problem] = []
        ref = REFERENCE_DAEMONS.get(service)
        if ref is not None:
            comm, units = ref
            running = comm[:15] in procs or (service == "fcopy" and FCOPY_UIO_COMM in procs)
            if running:
                held = (
                    f"/dev/vmbus/{CHARDEV[service]}" if service in CHARDEV else "the fcopy device"
                )
                out.append(
                    Problem(
                        service,
                        "error",
                        f"another {comm} holds {held}",
                        f"systemctl disable --now {units}",
                    )
                )
        node = CHARDEV.get(service)
        if node is None and service == "fcopy" and dev.driver == "hv_utils":
            node = "hv_fcopy"
        if node and dev.driver == "hv_utils":
            path = self.paths.vmbus_device(node)
            if not os.path.exists(path):
                out.append(
                    Problem(
                        service,
                        "error",
                        f"{path} does not exist although hv_utils is bound",
                        "check udev: udevadm trigger",
                    )
                )
        return out

    def _daemon_problems(
        self, service: str, dinfo: dict[str, Any], doc: dict[str, Any] | None, own: bool
    ) -> list[Problem]:
        if not own:
            return []
        out: list[Problem] = []
        name, unit = dinfo["name"], dinfo["unit"]
        if dinfo["source"] == "unreadable":
            return [
                Problem(
                    service,
                    "warning",
                    f"cannot tell whether {name} runs: its state file is unreadable",
                    "run hvguestctl status as root",
                )
            ]
        if not dinfo["running"]:
            # The kernel answers heartbeats on its own; only the health report is lost.
            severity = "warning" if service == "heartbeat" else "error"
            why = {
                "kvp": "the host shows no IP address and cannot exchange KVP items",
                "vss": "production checkpoints and backups fall back or fail",
                "fcopy": "Copy-VMFile fails",
                "heartbeat": "application health is not reported to the host",
            }[service]
            state = (
                f" (unit {dinfo['active_state']}/{dinfo['sub_state']})"
                if dinfo["source"] == "systemd"
                else ""
            )
            out.append(
                Problem(
                    service,
                    severity,
                    f"{name} is not running{state}: {why}",
                    f"systemctl start {unit}; journalctl -u {unit}",
                )
            )
            return out
        if doc is None:
            out.append(
                Problem(
                    service,
                    "warning",
                    f"{name} runs but published no state",
                    f"journalctl -u {unit}",
                )
            )
            return out
        if doc.get("state") in ("failed", "error"):
            err = doc.get("last_error") or {}
            out.append(
                Problem(
                    service,
                    "error",
                    f"{name}: {err.get('message') or 'failed'}",
                    err.get("remedy") or f"journalctl -u {unit}",
                )
            )
        elif doc.get("last_error"):
            err = doc["last_error"]
            when = f" at {err['time']}" if err.get("time") else ""
            out.append(
                Problem(
                    service,
                    "warning",
                    f"last error{when}: {err.get('message')}",
                    err.get("remedy") or f"journalctl -u {unit}",
                )
            )
        return out

    # -- details ---------------------------------------------------------------------------

    def _details(
        self,
        service: str,
        dev: VmbusDevice | None,
        doc: dict[str, Any] | None,
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
            return self._heartbeat_details(dev, doc, hb, problems)
        if service == "shutdown":
            return self._shutdown_details(hb, problems)
        return self._timesync_details(dev, hb, problems)

    def _heartbeat_details(
        self,
        dev: VmbusDevice | None,
        doc: dict[str, Any] | None,
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

    def _shutdown_details(self, hb: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
        hooks = shutdown_hooks.list_hooks(self.paths)
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
        last = shutdown_hooks.load_results(self.paths)
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
            "hook_dir": shutdown_hooks.hook_dir(self.paths),
            "hooks": [{"name": h.name, "usable": h.usable, "problem": h.problem} for h in hooks],
            "last_run": last,
        }

    def _timesync_details(
        self, dev: VmbusDevice | None, hb: dict[str, Any], problems: list[Problem]
    ) -> dict[str, Any]:
        if dev is None:
            return {}
        st = self.timesync_check(self.paths)
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


def collect(paths: Paths, **kwargs: Any) -> dict[str, Any]:
    return Collector(paths, **kwargs).collect()
