"""Direct access as data, for ``hvguestctl direct status`` and the ``direct`` row of
``hvguestctl status``: the setting, the socket, the port and its service GUID, the
connections since boot and the host's instructions."""

from __future__ import annotations

import os
from typing import Any

from hvguest.command import Runner
from hvguest.direct import host
from hvguest.direct.guid import service_guid
from hvguest.direct.publish import publish_value
from hvguest.direct.settings import DirectSettings
from hvguest.direct.units import (
    SOCKET_UNIT,
    SSHD,
    SYSTEMD_VSOCK_PORT,
    SYSTEMD_VSOCK_SOCKET,
    connections_since_boot,
    unit_state,
)


def conflict_text(port: int) -> str:
    return (f"systemd's {SYSTEMD_VSOCK_SOCKET} already serves SSH on vsock port "
            f"{SYSTEMD_VSOCK_PORT}: use it (and leave direct off), stop it "
            f"(systemctl disable --now {SYSTEMD_VSOCK_SOCKET}; with systemd-ssh-generator "
            "also systemd.ssh_auto=no on the kernel command line), or choose another "
            f"port (hvguestctl direct enable --port N); hvguest does not bind port {port} "
            "twice")


def collect(settings: DirectSettings, runner: Runner, *, use_systemd: bool,
            sshd: str = SSHD) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "enabled": settings.enabled,
        "port": settings.port,
        "service_guid": service_guid(settings.port),
        "keys_from_host": settings.authorized_keys_from_host,
        "user": settings.user,
        "socket": None,
        "listening": False,
        "connections_since_boot": None,
        "conflict": None,
        "problems": [],
        "published": publish_value(settings),
        "host_instructions": host.instructions(settings.port, settings.user),
    }
    problems: list[str] = doc["problems"]
    if settings.enabled and not os.path.exists(sshd):
        problems.append(f"{sshd} is missing: install openssh-server (every connection "
                        "is closed at once)")
    if not use_systemd:
        if settings.enabled:
            problems.append("PID 1 is not systemd: nothing listens on vsock")
        return doc
    sock = unit_state(runner, SOCKET_UNIT)
    doc["socket"] = {"unit": SOCKET_UNIT, "load": sock.load, "active": sock.active,
                     "sub": sock.sub, "file_state": sock.file_state,
                     "accepted": sock.accepted, "error": sock.error or None}
    doc["listening"] = sock.listening
    if settings.enabled or sock.listening:
        doc["connections_since_boot"] = connections_since_boot(runner)
    theirs = unit_state(runner, SYSTEMD_VSOCK_SOCKET)
    if theirs.in_use and settings.port == SYSTEMD_VSOCK_PORT:
        doc["conflict"] = conflict_text(settings.port)
    if sock.error:
        problems.append(f"systemctl cannot show {SOCKET_UNIT}: {sock.error}")
    elif sock.load != "loaded":
        problems.append(f"{SOCKET_UNIT} is not installed ({sock.load or 'unknown'})")
    elif settings.enabled and not sock.listening:
        problems.append(f"direct.enabled is true but {SOCKET_UNIT} is {sock.active}"
                        f"/{sock.sub}: run hvguestctl direct enable")
    elif not settings.enabled and sock.listening:
        problems.append(f"direct.enabled is false but {SOCKET_UNIT} listens: run "
                        "hvguestctl direct disable")
    if settings.enabled and doc["conflict"]:
        problems.append(doc["conflict"])
    return doc


def summary(doc: dict[str, Any]) -> str:
    """One line: the ``direct`` row of ``hvguestctl status``."""
    state = "on" if doc["enabled"] else "off"
    sock = doc.get("socket") or {}
    listening = "listening" if doc["listening"] else (sock.get("active") or "no socket")
    conns = doc.get("connections_since_boot")
    count = "" if conns is None else f", {conns} connection{'s' if conns != 1 else ''}"
    text = f"{state}: vsock port {doc['port']} ({listening}{count})"
    if doc["problems"]:
        text += f"; {doc['problems'][0]}"
    return text


def host_lines(settings: DirectSettings) -> list[str]:
    return host.instructions(settings.port, settings.user)
