"""The systemd side of direct access: the socket unit, the drop-ins ``hvguestctl direct
enable`` writes, and what systemd and the journal say about them.

``hvguest-direct.socket`` (shipped, not enabled) listens on ``vsock::22``: an empty
CID is VMADDR_CID_ANY, the only local address that works under hv_sock (which reports
VMADDR_CID_ANY as the local CID) and also the one vsock_loopback and virtio accept.
``Accept=yes`` starts ``hvguest-direct@.service`` (``sshd -i``) per connection.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from hvguest.command import Runner
from hvguest.paths import Paths

SOCKET_UNIT = "hvguest-direct.socket"
SERVICE_TEMPLATE = "hvguest-direct@.service"
INSTANCE_GLOB = "hvguest-direct@*.service"
SYSTEMD_VSOCK_SOCKET = "sshd-vsock.socket"  # systemd >= 256, systemd-ssh-generator
SYSTEMD_VSOCK_PORT = 22
DEFAULT_PORT = 22
SSHD = "/usr/sbin/sshd"
KEYS_COMMAND = "/usr/bin/hvguest-direct-keys"
KEYS_COMMAND_USER = "nobody"
PORT_DROPIN = "50-hvguest-port.conf"
KEYS_DROPIN = "50-hvguest-keys.conf"
# systemd's "unit started" catalogue entry (SD_MESSAGE_UNIT_STARTED).
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"
TIMEOUT = 30.0  # systemctl show, journalctl
# systemctl daemon-reload / enable / restart: a loaded machine takes its time, and
# giving up half-way leaves the setting and the socket apart (status then says so).
ACTION_TIMEOUT = 120.0
_HEADER = "# Written by 'hvguestctl direct enable' from /etc/hvguest/hvguest.yaml; do not edit.\n"


def dropin_dir(paths: Paths, unit: str) -> str:
    return os.path.join(paths.os_etc, "systemd", "system", f"{unit}.d")


def port_dropin(port: int) -> str | None:
    """The socket's drop-in for a port other than the unit's own 22 (None: none)."""
    if port == DEFAULT_PORT:
        return None
    return (f"{_HEADER}[Socket]\n# The empty line drops the unit's vsock::22.\n"
            f"ListenStream=\nListenStream=vsock::{int(port)}\n")


def keys_dropin(enabled: bool) -> str | None:
    """The service's drop-in that lets sshd ask hvguest-direct-keys for the host's keys
    (the %%u of a unit file is sshd's %u: the user logging in; %f the offered key).
    Only these vsock connections get it: the machine's network sshd is unchanged."""
    if not enabled:
        return None
    command = f"{KEYS_COMMAND} %%u %%f"
    return (f"{_HEADER}[Service]\nExecStart=\n"
            f'ExecStart=-{SSHD} -i -o "AuthorizedKeysCommand={command}" '
            f"-o AuthorizedKeysCommandUser={KEYS_COMMAND_USER}\n")


@dataclass
class UnitState:
    """What ``systemctl show`` says of one unit (empty strings: unknown)."""

    name: str
    load: str = ""
    active: str = ""
    sub: str = ""
    file_state: str = ""
    accepted: int | None = None
    error: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def listening(self) -> bool:
        return self.active == "active" and self.sub in ("listening", "running")

    @property
    def in_use(self) -> bool:
        """Loaded and listening, or set to start at boot (enabled or generated)."""
        if self.load != "loaded":
            return False
        return self.active in ("active", "activating", "reloading") or self.file_state in (
            "enabled", "enabled-runtime", "generated", "linked", "linked-runtime")


def unit_state(runner: Runner, unit: str) -> UnitState:
    props = "LoadState,ActiveState,SubState,UnitFileState,NAccepted"
    result = runner(["systemctl", "show", f"--property={props}", "--", unit], TIMEOUT)
    state = UnitState(unit)
    if not result.ok:
        state.error = (result.output.splitlines() or ["no output"])[0][:200]
        return state
    values = dict(line.partition("=")[::2] for line in result.output.splitlines())
    state.load = values.get("LoadState", "")
    state.active = values.get("ActiveState", "")
    state.sub = values.get("SubState", "")
    state.file_state = values.get("UnitFileState", "")
    accepted = values.get("NAccepted", "")
    state.accepted = int(accepted) if accepted.isdigit() else None
    return state


def count_connections(output: str) -> int:
    """Connections in ``journalctl -o json`` output of the instances: one "started"
    record of PID 1 per connection."""
    count = 0
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a journalctl warning mixed into the output
        if not isinstance(record, dict) or record.get("_PID") != "1":
            continue
        if record.get("MESSAGE_ID") == UNIT_STARTED or (
                record.get("JOB_TYPE") == "start" and record.get("JOB_RESULT") == "done"):
            count += 1
    return count


def connections_since_boot(runner: Runner) -> int | None:
    """How many connections the socket took this boot, from the journal (None: the
    journal could not be read)."""
    result = runner(["journalctl", "-b", "--no-pager", "-q", "-o", "json",
                     "--output-fields=MESSAGE_ID,JOB_TYPE,JOB_RESULT,_PID",
                     "-u", INSTANCE_GLOB], TIMEOUT)
    if not result.ok:
        return None
    return count_connections(result.output)
