"""The status report behind ``hvguestctl status``, built as data: one document, six services.

For each integration service: does the host offer it (VMBus device present),
is the kernel driver bound (hv_utils, or uio_hv_generic for fcopy on >= 6.10),
is the hvguest daemon running, and what it last did. Problems carry a remedy
sentence. The document's types are in ``hvguest.status.document``; showing it is
``render_text`` and ``render_json``'s work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hvguest.command import Runner, run_command
from hvguest.paths import Paths
from hvguest.proc import processes, systemd_running
from hvguest.state import state_file, utc_now
from hvguest.status.daemons import daemon_info, read_state
from hvguest.status.details import DetailsContext, service_details
from hvguest.status.document import (
    DAEMON,
    HOST_NAMES,
    LEVEL_EXIT,
    SCHEMA_VERSION,
    SERVICES,
    DaemonInfo,
    Problem,
    PublishedState,
    ServiceEntry,
    StatusDocument,
    absent_entry,
    enable_remedy,
)
from hvguest.status.problems import chardev_problems, daemon_problems, driver_problem
from hvguest.timesync import check as timesync
from hvguest.vmbus import kmsg
from hvguest.vmbus.inventory import Inventory, scan


def _proto_version(doc: PublishedState | None) -> str | None:
    if not doc:
        return None
    details = doc.get("details") or {}
    for source in (details, doc):
        for key in ("protocol_version", "negotiated_version", "protocol"):
            value = source.get(key)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return str(value)
    return None


def _health(severities: set[str]) -> str:
    return "error" if "error" in severities else "degraded" if "warning" in severities else "ok"


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
        self.details = DetailsContext(paths, timesync_check or (
            lambda p: timesync.check(p, warn_offset_ms=warn_offset_ms)
        ))
        self.now = now
        self.kernel_versions: dict[str, str] = {}

    def collect(self) -> StatusDocument:
        paths = self.paths
        inv = scan(paths)
        unreadable = list(inv.unreadable)
        doc: StatusDocument = {
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
                doc["services"][service] = absent_entry(service)
            return doc
        self.kernel_versions = kmsg.ic_versions(paths, unreadable)
        states = {d: read_state(paths, d, unreadable) for d in sorted(set(DAEMON.values()))}
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
        # hvguest's own daemons run under the reference names too: not rivals.
        own = {d["pid"] for d in daemons.values() if d["running"]}
        procs = {pid: comm for pid, comm in processes(paths, own_mount_ns=True).items()
                 if pid not in own}
        problems: list[Problem] = []
        for service in SERVICES:
            entry, found = self._service(service, inv, states, daemons, procs)
            doc["services"][service] = entry
            problems.extend(found)
        doc["problems"] = [p.as_report() for p in problems]
        overall = _health({p.severity for p in problems})
        doc["overall"] = overall
        doc["exit_code"] = LEVEL_EXIT[overall]
        count = sum(1 for p in problems if p.severity in ("error", "warning"))
        doc["summary"] = (
            f"{overall}: {len(inv.devices)} VMBus devices, "
            f"{count} problem{'s' if count != 1 else ''}"
        )
        return doc

    def _service(
        self,
        service: str,
        inv: Inventory,
        states: dict[str, PublishedState | None],
        daemons: dict[str, DaemonInfo],
        procs: dict[int, str],
    ) -> tuple[ServiceEntry, list[Problem]]:
        dev = inv.service_device(service)
        daemon = DAEMON[service]
        doc = states[daemon]
        dinfo = daemons[daemon]
        own = daemon == service  # the service's own daemon, not the watcher
        entry = absent_entry(service)
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
            bad = driver_problem(service, dev, self.paths)
            entry["driver_bound"] = bad is None or bad.severity != "error"
            if bad:
                problems.append(bad)
            problems.extend(chardev_problems(self.paths, service, dev, procs))
            problems.extend(daemon_problems(service, dinfo, doc, own))
        entry["details"] = service_details(self.details, service, dev, doc, problems)
        entry["problems"] = [p.as_dict() for p in problems]
        if dev is not None:
            entry["health"] = _health({p.severity for p in problems})
        return entry, problems


def collect(paths: Paths, **kwargs: Any) -> StatusDocument:
    return Collector(paths, **kwargs).collect()
