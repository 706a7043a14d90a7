"""hvguestctl direct {status,enable,disable}: SSH over Hyper-V sockets (vsock).

``enable`` sets ``direct.enabled`` (and ``--port``, ``--keys-from-host USER``) in
hvguest.yaml, writes the drop-ins the settings need, enables and (re)starts
hvguest-direct.socket and restarts a running hvguest-kvpd, which then keeps
``hvguest.direct`` = ``ssh vsock:<port>`` in KVP pool 1 for the host. It refuses,
changing nothing, when sshd is missing, when systemd's own sshd-vsock.socket serves
the same port, or when the keys helper is not root's alone. ``disable`` undoes it.
``status`` exits 0 when the socket agrees with the setting, 2 when not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from hvguest.cli.common import (
    add_config_option,
    add_json_option,
    command_group,
    finish_action,
    print_json,
)
from hvguest.cli.direct_config import update_config_file
from hvguest.cli.privilege import require_root
from hvguest.command import Runner, run_command
from hvguest.config import load_config
from hvguest.direct import report
from hvguest.direct.guid import MAX_PORT, MIN_PORT, service_guid
from hvguest.direct.publish import PUBLISH_KEY
from hvguest.direct.settings import DirectSettings, check_user_name
from hvguest.direct.units import (
    ACTION_TIMEOUT,
    KEYS_COMMAND,
    KEYS_DROPIN,
    PORT_DROPIN,
    SERVICE_TEMPLATE,
    SOCKET_UNIT,
    SSHD,
    SYSTEMD_VSOCK_PORT,
    SYSTEMD_VSOCK_SOCKET,
    dropin_dir,
    keys_dropin,
    port_dropin,
    unit_state,
)
from hvguest.errors import HvGuestError, LocalUsageError
from hvguest.files import atomic_write
from hvguest.hookrun import Unsafe, open_checked
from hvguest.paths import Paths
from hvguest.proc import systemd_running
from hvguest.roots import paths_from_args
from hvguest.text import say

KVP_UNIT = "hvguest-kvp.service"


def register(sub: Any) -> None:
    actions = command_group(
        sub, "direct", help="SSH over Hyper-V sockets (vsock): host access with no network",
        description="Let the Hyper-V host reach this guest's sshd over AF_VSOCK (hvc ssh, "
        "hvc nc) with no network: off by default.", json=False, config=None)
    st = actions.add_parser("status", help="setting, socket, port and GUID, connections, "
                            "and what to type on the host")
    add_json_option(st)
    add_config_option(st, "the direct section")
    finish_action(st, run_status)
    en = actions.add_parser("enable", help="listen on vsock and tell the host (root)")
    en.add_argument("--port", type=_port, help=f"vsock port ({MIN_PORT}..{MAX_PORT}); "
                    "default: direct.port (22)")
    keys = en.add_mutually_exclusive_group()
    keys.add_argument("--keys-from-host", metavar="USER", type=_user,
                      help="accept the host's keys from KVP pool 0 for USER only")
    keys.add_argument("--no-keys-from-host", action="store_true",
                      help="stop accepting the host's keys from KVP")
    finish_action(en, run_enable)
    dis = actions.add_parser("disable", help="stop listening on vsock (root)")
    finish_action(dis, run_disable)


def _port(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not MIN_PORT <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"port {value} is outside {MIN_PORT}..{MAX_PORT}")
    return value


def _user(text: str) -> str:
    problem = check_user_name(text) if text else "the user name is empty"
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def keys_command_problem(path: str = KEYS_COMMAND) -> str | None:
    """Why sshd would refuse ``path`` as AuthorizedKeysCommand (and why we must not
    run it as root either): not root's, or writable by someone else on the way."""
    try:
        os.close(open_checked(path))
    except Unsafe as exc:
        return f"{path}: {exc}"
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


@dataclass
class DirectControl:
    """What enable and disable do to the machine; every outside fact injectable."""

    paths: Paths
    runner: Runner = run_command
    sshd: str = SSHD
    keys_command: str = KEYS_COMMAND
    said: list[str] = field(default_factory=list)

    def systemctl(self, *args: str, check: bool = True) -> None:
        result = self.runner(["systemctl", *args], ACTION_TIMEOUT)
        if check and not result.ok:
            raise HvGuestError(f"systemctl {' '.join(args)} failed ({result.code}): "
                               f"{result.output[:300]}")

    def preflight(self, settings: DirectSettings) -> None:
        if not systemd_running(self.paths):
            raise LocalUsageError("PID 1 is not systemd: hvguest-direct.socket cannot run; "
                                  "nothing was changed")
        if not os.path.exists(self.sshd):
            raise LocalUsageError(f"{self.sshd} is missing: install openssh-server "
                                  "(apt-get install openssh-server / dnf install "
                                  "openssh-server); nothing was changed")
        theirs = unit_state(self.runner, SYSTEMD_VSOCK_SOCKET)
        if theirs.in_use and settings.port == SYSTEMD_VSOCK_PORT:
            raise LocalUsageError(f"{report.conflict_text(settings.port)}; nothing was "
                                  "changed")
        if theirs.in_use:
            self.said.append(f"note: {SYSTEMD_VSOCK_SOCKET} also serves SSH on vsock port "
                             f"{SYSTEMD_VSOCK_PORT}; hvguest uses port {settings.port}")
        if settings.authorized_keys_from_host:
            problem = keys_command_problem(self.keys_command)
            if problem:
                raise LocalUsageError(f"sshd would refuse the keys helper: {problem}; "
                                      "nothing was changed")

    def write_dropins(self, settings: DirectSettings) -> None:
        for unit, name, text in (
            (SOCKET_UNIT, PORT_DROPIN, port_dropin(settings.port)),
            (SERVICE_TEMPLATE, KEYS_DROPIN,
             keys_dropin(settings.enabled and settings.authorized_keys_from_host)),
        ):
            directory = dropin_dir(self.paths, unit)
            path = os.path.join(directory, name)
            if text is None or not settings.enabled:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                with contextlib.suppress(OSError):
                    os.rmdir(directory)  # only when nothing else is in it
            else:
                atomic_write(path, text, mode=0o644)

    def enable(self, changes: dict[str, Any]) -> DirectSettings:
        current = load_config(self.paths.config_file).get(DirectSettings)
        import dataclasses

        try:
            planned = dataclasses.replace(current, enabled=True, **changes)
        except (TypeError, ValueError) as exc:
            raise LocalUsageError(f"direct: {exc}; nothing was changed") from None
        self.preflight(planned)
        settings = update_config_file(self.paths.config_file, {"enabled": True, **changes})
        self.write_dropins(settings)
        self.systemctl("daemon-reload")
        self.systemctl("enable", SOCKET_UNIT)
        self.systemctl("restart", SOCKET_UNIT)  # a new port applies now
        self.systemctl("try-restart", KVP_UNIT, check=False)  # republishes hvguest.direct
        return settings

    def disable(self) -> DirectSettings:
        settings = update_config_file(self.paths.config_file, {"enabled": False})
        self.systemctl("disable", "--now", SOCKET_UNIT)
        self.write_dropins(settings)
        self.systemctl("daemon-reload")
        self.systemctl("try-restart", KVP_UNIT, check=False)  # withdraws hvguest.direct
        return settings


def _settings(args: argparse.Namespace, paths: Paths) -> DirectSettings:
    path = getattr(args, "config", None) or paths.config_file
    settings: DirectSettings = load_config(path, missing_ok=path == paths.config_file).get(
        DirectSettings)
    return settings


def run_status(args: argparse.Namespace) -> int:
    paths = paths_from_args(args)
    settings = _settings(args, paths)
    doc = report.collect(settings, run_command, use_systemd=systemd_running(paths))
    if args.json:
        print_json(doc)
    else:
        render(doc)
    return 2 if doc["problems"] else 0


def render(doc: dict[str, Any]) -> None:
    sock = doc.get("socket") or {}
    say(f"direct:      {'enabled' if doc['enabled'] else 'disabled'} (direct.enabled)")
    if sock:
        accepted = sock.get("accepted")
        more = f", {accepted} accepted since it started" if accepted is not None else ""
        say(f"socket:      {sock['unit']} {sock.get('active')}/{sock.get('sub')}, "
            f"{sock.get('file_state') or 'unknown'}{more}")
    else:
        say("socket:      unknown (PID 1 is not systemd)")
    say(f"port:        vsock {doc['port']}, service GUID {doc['service_guid']}")
    conns = doc.get("connections_since_boot")
    say(f"connections: {'unknown' if conns is None else conns} since boot (journal)")
    keys = f"yes, for {doc['user']}" if doc["keys_from_host"] else "no"
    say(f"host keys:   {keys} (KVP pool 0, hvguest.ssh.authorized_key.<n>)")
    say(f"published:   {PUBLISH_KEY} = {doc['published'] or '(none)'} in KVP pool 1")
    for problem in doc["problems"]:
        say(f"! {problem}")
    say("")
    for line in doc["host_instructions"]:
        say(line)


def run_enable(args: argparse.Namespace) -> int:
    require_root("direct enable")
    paths = paths_from_args(args)
    changes: dict[str, Any] = {}
    if args.port is not None:
        changes["port"] = args.port
    if args.keys_from_host:
        changes.update(authorized_keys_from_host=True, user=args.keys_from_host)
    elif args.no_keys_from_host:
        changes["authorized_keys_from_host"] = False
    control = DirectControl(paths)
    settings = control.enable(changes)
    for line in control.said:
        say(line)
    say(f"direct access on: vsock port {settings.port}, service GUID "
        f"{service_guid(settings.port)}")
    say("")
    for line in report.host_lines(settings):
        say(line)
    return 0


def run_disable(args: argparse.Namespace) -> int:
    require_root("direct disable")
    DirectControl(paths_from_args(args)).disable()
    say(f"direct access off: {SOCKET_UNIT} stopped and disabled")
    return 0


def status_row(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    """The ``direct`` entry of ``hvguestctl status`` (a broken file: the defaults,
    as the other rows do)."""
    try:
        settings = _settings(args, paths)
    except HvGuestError:
        settings = DirectSettings()
    doc = report.collect(settings, run_command, use_systemd=systemd_running(paths))
    doc["summary"] = report.summary(doc)
    return doc
