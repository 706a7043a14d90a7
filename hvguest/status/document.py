"""The status document: its shape as types, and the facts every part of it names.

The document is data: ``hvguest.status.collect`` builds it, ``render_text`` and
``render_json`` show it. Its shape is docs/status-json.md (schema
hvguest/status/status_schema.json); bump SCHEMA_VERSION on incompatible changes.
The keys are declared in the order the JSON shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

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
LEVEL_EXIT = {"ok": 0, "error": 1, "degraded": 2, "not-hyperv": 0}

# A daemon's published state file (hvguest.state): free-form beyond its few keys.
PublishedState = dict[str, Any]


class ProblemEntry(TypedDict):
    severity: str  # error / warning / info
    message: str
    remedy: str


class ReportProblem(TypedDict):
    service: str
    severity: str
    message: str
    remedy: str


class DaemonInfo(TypedDict):
    name: str  # hvguest-kvpd
    unit: str  # hvguest-kvp.service
    running: bool
    source: str  # systemd / pid / unreadable / none: how "running" was found
    active_state: str | None
    sub_state: str | None
    pid: Any
    state: Any
    started: Any
    updated: Any
    version: Any
    stale_state: bool  # a state file of a daemon that no longer runs


class DeviceRef(TypedDict):
    instance: str
    vmbus_id: int | None
    state: int | None
    uio: str | None


class ServiceEntry(TypedDict):
    host_name: str
    health: str  # absent / off / ok / degraded / error
    offered: bool
    device: DeviceRef | None
    driver: str | None
    driver_bound: bool
    daemon: DaemonInfo | None
    protocol_version: str | None
    last_op: Any
    recent: list[Any]
    last_error: Any
    problems: list[ProblemEntry]
    details: dict[str, Any]


class StatusDocument(TypedDict):
    schema_version: int
    generated: str
    hyperv: bool
    overall: str  # ok / degraded / error / not-hyperv
    exit_code: int
    summary: str
    vmbus_devices: int
    systemd: bool
    unreadable: list[str]
    problems: list[ReportProblem]
    services: dict[str, ServiceEntry]
    direct: NotRequired[dict[str, Any]]  # hvguestctl adds it (hvguest.direct.report)


@dataclass(frozen=True)
class Problem:
    service: str
    severity: str  # error / warning / info
    message: str
    remedy: str = ""

    def as_dict(self) -> ProblemEntry:
        return {"severity": self.severity, "message": self.message, "remedy": self.remedy}

    def as_report(self) -> ReportProblem:
        return {"service": self.service, "severity": self.severity, "message": self.message,
                "remedy": self.remedy}


def unit_name(daemon: str) -> str:
    return f"hvguest-{daemon}.service"


def program_name(daemon: str) -> str:
    return f"hvguest-{daemon}d"


def enable_remedy(service: str) -> str:
    return (
        f"Enable-VMIntegrationService -VMName <vm> -Name '{HOST_NAMES[service]}' "
        "(on the Hyper-V host)"
    )


def absent_entry(service: str) -> ServiceEntry:
    """A service the host does not offer, before anything is known of it."""
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
