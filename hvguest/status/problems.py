"""Problems of a service the host offers: its driver, its device node, its daemon.

Each problem carries a remedy sentence: what the administrator types next.
"""

from __future__ import annotations

import os

from hvguest.paths import Paths
from hvguest.status.document import DaemonInfo, Problem, PublishedState
from hvguest.vmbus.inventory import VmbusDevice

# Character devices of the kernel transport (fcopy's only up to 6.9).
CHARDEV = {"kvp": "hv_kvp", "vss": "hv_vss"}
# Reference C daemons that would hold our device, by the names the kernel (Debian,
# Ubuntu) and Fedora/RHEL give them (comm is cut at 15 characters). hvguest's own
# daemons run under these names too (the units start /usr/sbin/hv_kvp_daemon): the
# caller leaves their PIDs out.
REFERENCE_DAEMONS = {
    "kvp": ("hv_kvp_daemon", "hypervkvpd"),
    "vss": ("hv_vss_daemon", "hypervvssd"),
    "fcopy": ("hv_fcopy_daemon", "hv_fcopy_uio_da", "hypervfcopyd"),
}
# The packages that start them. Their unit names (hv-kvp-daemon, hypervkvpd, ...) are
# aliases of hvguest's units now: a remedy never names them.
REFERENCE_PACKAGES = "hyperv-daemons, {fedora}, linux-cloud-tools"


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


def driver_problem(service: str, dev: VmbusDevice, paths: Paths) -> Problem | None:
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


def chardev_problems(
    paths: Paths, service: str, dev: VmbusDevice, procs: dict[int, str]
) -> list[Problem]:
    """A reference C daemon holding the device, or a device node missing. ``procs``:
    PID -> comm of the processes that are not hvguest's own daemons."""
    out: list[Problem] = []
    names = REFERENCE_DAEMONS[service] if service in REFERENCE_DAEMONS else ()
    rivals = sorted((pid, comm) for pid, comm in procs.items() if comm in names)
    if rivals:
        pid, comm = rivals[0]
        held = f"/dev/vmbus/{CHARDEV[service]}" if service in CHARDEV else "the fcopy device"
        packages = REFERENCE_PACKAGES.format(fedora=names[-1])
        out.append(
            Problem(
                service,
                "error",
                f"another {comm} (pid {pid}) holds {held}",
                f"stop pid {pid} and remove what starts it ({packages})",
            )
        )
    node = CHARDEV.get(service)
    if node is None and service == "fcopy" and dev.driver == "hv_utils":
        node = "hv_fcopy"
    if node and dev.driver == "hv_utils":
        path = paths.vmbus_device(node)
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


def daemon_problems(
    service: str, dinfo: DaemonInfo, doc: PublishedState | None, own: bool
) -> list[Problem]:
    """The service's own daemon: not running, silent, failed, or its last error."""
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
