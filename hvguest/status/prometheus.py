"""The status document as Prometheus metrics (``hvguestctl status --prometheus``).

The text is prometheus_client's: one collector turns the document into metric
families on a private registry, and ``generate_latest`` writes them. Counters are
the daemons' own (since each daemon started); timestamps are seconds since the
epoch; names follow Prometheus' conventions (``_total``, ``_seconds``,
``_bytes``, ``_timestamp_seconds``). A value the document does not know is left
out rather than given as 0.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

import hvguest
from hvguest.status.document import DAEMON, SERVICES, StatusDocument

HEALTH_STATES = ("absent", "off", "ok", "degraded", "error")


def _epoch(stamp: object) -> float | None:
    """'2026-12-03T15:00:00Z' (hvguest.state.utc_now) -> seconds since the epoch."""
    if not isinstance(stamp, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class StatusCollector(Collector):
    """A prometheus_client collector over one status document."""

    def __init__(self, doc: StatusDocument, now: Callable[[], float] = time.time) -> None:
        self.doc = doc
        self.now = now

    def collect(self) -> Iterator[Metric]:
        yield from self._services()
        yield from self._vss(self.doc["services"]["vss"]["details"])
        yield from self._fcopy(self.doc["services"]["fcopy"]["details"])
        yield from self._kvp(self.doc["services"]["kvp"]["details"])
        yield from self._heartbeat()
        info = InfoMetricFamily("hvguest_version", "hvguest's version")
        info.add_metric([], {"version": hvguest.__version__})
        yield info

    def _services(self) -> Iterator[Metric]:
        offered = GaugeMetricFamily("hvguest_service_offered",
                                    "1 if the host offers the integration service",
                                    labels=["service"])
        up = GaugeMetricFamily("hvguest_daemon_up",
                               "1 if the hvguest daemon serving the service runs",
                               labels=["service", "daemon"])
        health = GaugeMetricFamily("hvguest_service_health",
                                   "1 for the service's current health state, 0 for the others",
                                   labels=["service", "state"])
        for name in SERVICES:
            entry = self.doc["services"][name]
            offered.add_metric([name], 1.0 if entry["offered"] else 0.0)
            daemon = entry["daemon"]
            running = bool(daemon and daemon.get("running"))
            up.add_metric([name, f"hvguest-{DAEMON[name]}d"], 1.0 if running else 0.0)
            for state in HEALTH_STATES:
                health.add_metric([name, state], 1.0 if entry["health"] == state else 0.0)
        yield offered
        yield up
        yield health

    def _vss(self, details: dict[str, Any]) -> Iterator[Metric]:
        stats = details.get("stats") or {}
        last = details.get("last_freeze") or {}
        frozen = GaugeMetricFamily("hvguest_vss_frozen", "1 while filesystems are frozen")
        frozen.add_metric([], 1.0 if details.get("frozen") else 0.0)
        yield frozen
        for key, name, text in (
            ("last_ok", "hvguest_vss_last_success_timestamp_seconds",
             "when the last successful freeze started"),
            ("last_failed", "hvguest_vss_last_failure_timestamp_seconds",
             "when the last failed freeze started"),
        ):
            value = _number(stats.get(key))
            if value is not None:
                g = GaugeMetricFamily(name, text)
                g.add_metric([], value)
                yield g
        if stats:
            freezes = CounterMetricFamily("hvguest_vss_freezes", "freezes by result",
                                          labels=["result"])
            freezes.add_metric(["ok"], float(stats.get("ok", 0)))
            freezes.add_metric(["failed"], float(stats.get("failed", 0)))
            yield freezes
            hooks = CounterMetricFamily("hvguest_vss_hooks_run", "freeze and thaw hooks run")
            hooks.add_metric([], float(stats.get("hooks_run", 0)))
            yield hooks
            failed = CounterMetricFamily("hvguest_vss_hooks_failed", "hooks that failed")
            failed.add_metric([], float(stats.get("hooks_failed", 0)))
            yield failed
        ms = _number(last.get("freeze_ms"))
        if ms is not None:
            g = GaugeMetricFamily("hvguest_vss_last_freeze_duration_seconds",
                                  "how long the last freeze took (FIFREEZE of every filesystem)")
            g.add_metric([], ms / 1000)
            yield g
        if last:
            g = GaugeMetricFamily("hvguest_vss_last_freeze_filesystems",
                                  "filesystems the last freeze froze")
            g.add_metric([], float(sum(1 for m in last.get("mounts") or []
                                       if isinstance(m, dict)
                                       and m.get("state") in ("frozen", "thawed"))))
            yield g

    def _fcopy(self, details: dict[str, Any]) -> Iterator[Metric]:
        if "transfers_ok" not in details:
            return
        transfers = CounterMetricFamily("hvguest_fcopy_transfers", "file copies by result",
                                        labels=["result"])
        transfers.add_metric(["ok"], float(details.get("transfers_ok") or 0))
        transfers.add_metric(["failed"], float(details.get("transfers_failed") or 0))
        yield transfers
        received = _number(details.get("bytes_received"))
        if received is not None:
            c = CounterMetricFamily("hvguest_fcopy_received_bytes",
                                    "bytes received by finished file copies")
            c.add_metric([], received)
            yield c
        recent = details.get("recent_transfers") or []
        last = _epoch(recent[-1].get("finished")) if recent and isinstance(recent[-1], dict) \
            else None
        if last is not None:
            g = GaugeMetricFamily("hvguest_fcopy_last_transfer_timestamp_seconds",
                                  "when the last file copy finished")
            g.add_metric([], last)
            yield g

    def _kvp(self, details: dict[str, Any]) -> Iterator[Metric]:
        by_op = details.get("by_op")
        if isinstance(by_op, dict):
            failed = details.get("failures_by_op") or {}
            requests = CounterMetricFamily("hvguest_kvp_requests", "KVP requests served",
                                           labels=["operation", "status"])
            for op, count in sorted(by_op.items()):
                bad = float(failed.get(op, 0)) if isinstance(failed, dict) else 0.0
                requests.add_metric([str(op), "ok"], float(count) - bad)
                requests.add_metric([str(op), "failed"], bad)
            yield requests
        pools = details.get("pools")
        if isinstance(pools, dict) and pools:
            records = GaugeMetricFamily("hvguest_kvp_pool_records", "records in each KVP pool",
                                        labels=["pool"])
            for pool, entry in sorted(pools.items()):
                value = _number(entry.get("records")) if isinstance(entry, dict) else None
                if value is not None:
                    records.add_metric([str(pool)], value)
            yield records

    def _heartbeat(self) -> Iterator[Metric]:
        hb = self.doc["services"]["heartbeat"]
        contact = hb["details"].get("contact")
        if hb["offered"] and contact in ("contact", "no-contact"):
            g = GaugeMetricFamily("hvguest_host_contact",
                                  "1 while the host's heartbeat keeps coming, 0 once it stopped")
            g.add_metric([], 1.0 if contact == "contact" else 0.0)
            yield g
        last = _epoch(hb["details"].get("last_contact"))
        if hb["offered"] and last is not None:
            g = GaugeMetricFamily("hvguest_host_contact_age_seconds",
                                  "seconds since the host's heartbeat last moved")
            g.add_metric([], max(0.0, self.now() - last))
            yield g
        offset = _number(self.doc["services"]["timesync"]["details"].get("offset_ms"))
        if offset is not None:
            g = GaugeMetricFamily("hvguest_clock_offset_seconds",
                                  "guest clock minus the host's PTP clock")
            g.add_metric([], offset / 1000)
            yield g


def render(doc: StatusDocument, now: Callable[[], float] = time.time) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(doc, now))
    return generate_latest(registry)
