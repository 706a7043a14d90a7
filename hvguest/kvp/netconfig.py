"""Apply a host-pushed IP configuration (SET_IP_INFO) through the guest's network stack.

hv_kvp_daemon writes an ifcfg file and a NetworkManager keyfile and hands both to a
distribution script, which only works on RHEL-like systems with NetworkManager. Here the
stack that actually manages the guest is detected (NetworkManager, systemd-networkd,
netplan, ifupdown) and configured natively:

* NetworkManager: keyfile ``/etc/NetworkManager/system-connections/hvguest-<if>.nmconnection``
  (mode 0600), ``nmcli connection reload`` and ``nmcli connection up``;
* systemd-networkd: ``/etc/systemd/network/10-hvguest-<if>.network``, ``networkctl reload``
  and ``networkctl reconfigure <if>``;
* netplan: ``/etc/netplan/90-hvguest-<if>.yaml`` (mode 0600), ``netplan apply``;
* ifupdown: ``/etc/network/interfaces.d/hvguest-<if>``, ``ifdown``/``ifup``.

Nothing of the host's text reaches these files or commands: the KVP role turns the
request into an ``IpConfig`` of typed, zone-free addresses (``hvguest.wire.ipconfig``),
``hvguest.kvp.netrender`` writes each stack's file from those values only, the interface
name and MAC from sysfs are checked the same way, and every command is an argv list
run without a shell.

Files are written atomically (``hvguest.files.atomic_write``: temporary file, fsync,
rename); commands run through ``hvguest.command.run_command`` (no shell, the process
group killed at its time limit). If a command fails or runs out of time, the previous
files are put back and the stack is reloaded again, so a bad push leaves the guest as
it was. Every command gets a share of one deadline so the whole operation ends inside
the kernel's 30 s window.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass

from hvguest.command import Runner, run_command
from hvguest.files import atomic_write
from hvguest.kvp.ipinfo import run_root
from hvguest.kvp.netrender import RENDERERS
from hvguest.paths import Paths
from hvguest.wire.ipconfig import IpConfig, LinkName, MacAddress, escaped
from hvguest.wire.status import HvStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: int
    detail: str


# How much of a failing tool's output goes into the detail (the host's log line).
OUTPUT_TAIL = 300


def find_interface(paths: Paths, guid: str) -> str | None:
    """The interface whose VMBus device_id is ``guid`` (any case, with or without braces)."""
    net = os.path.join(paths.sys, "class", "net")
    for name in sorted(_listdir(net)):
        try:
            with open(os.path.join(net, name, "device", "device_id"), encoding="ascii") as f:
                device_id = f.read().strip().strip("{}").lower()
        except (OSError, UnicodeDecodeError):
            continue
        if device_id == guid:
            return name
    return None


def interface_mac(paths: Paths, name: str) -> MacAddress | None:
    """The interface's MAC; None if sysfs has none readable (the files then go without)."""
    try:
        with open(os.path.join(paths.sys, "class", "net", name, "address"), encoding="ascii") as f:
            return MacAddress.parse(f.read())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def detect_stack(paths: Paths, which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The stack managing this guest's network: the first one found running/configured."""
    run, etc = run_root(paths), paths.os_etc
    if (
        os.path.isdir(os.path.join(etc, "netplan"))
        and any(n.endswith(".yaml") for n in _listdir(os.path.join(etc, "netplan")))
        and which("netplan")
    ):
        return "netplan"
    if os.path.exists(os.path.join(run, "NetworkManager")) and which("nmcli"):
        return "networkmanager"
    # networkd running keeps its manager state in netif/state; the directories alone
    # are made by systemd's tmpfiles at every boot, networkd enabled or not.
    if os.path.exists(os.path.join(run, "systemd", "netif", "state")) and which("networkctl"):
        return "networkd"
    if os.path.exists(os.path.join(etc, "network", "interfaces")) and which("ifup"):
        return "ifupdown"
    return None


def _listdir(path: str) -> list[str]:
    """The names in ``path``; none when it cannot be listed (no such stack, no sysfs)."""
    try:
        return os.listdir(path)
    except OSError:
        return []


# -- applying ------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    path: str
    text: str
    mode: int
    commands: tuple[tuple[str, ...], ...]
    # After a failure, with the previous file back (or ours gone): bring the previous
    # configuration up again.
    restore: tuple[tuple[str, ...], ...]


def plan_for(
    stack: str, paths: Paths, config: IpConfig, name: LinkName, mac: MacAddress | None
) -> Plan:
    if stack not in RENDERERS:
        raise ValueError(f"unknown network stack {stack!r}")
    text = RENDERERS[stack](config, name, mac)
    etc = paths.os_etc
    cmds: tuple[tuple[str, ...], ...]
    if stack == "networkmanager":
        path = os.path.join(
            etc, "NetworkManager", "system-connections", f"hvguest-{name}.nmconnection"
        )
        cmds = (("nmcli", "connection", "reload"), ("nmcli", "connection", "up", f"hvguest-{name}"))
        # our profile may be gone again: let NetworkManager pick the best one left
        restore = (("nmcli", "connection", "reload"), ("nmcli", "device", "connect", name.value))
        return Plan(path, text, 0o600, cmds, restore)
    if stack == "networkd":
        path = os.path.join(etc, "systemd", "network", f"10-hvguest-{name}.network")
        cmds = (("networkctl", "reload"), ("networkctl", "reconfigure", name.value))
        return Plan(path, text, 0o644, cmds, cmds)
    if stack == "netplan":
        path = os.path.join(etc, "netplan", f"90-hvguest-{name}.yaml")
        cmds = (("netplan", "apply"),)
        return Plan(path, text, 0o600, cmds, cmds)
    if stack == "ifupdown":
        path = os.path.join(etc, "network", "interfaces.d", f"hvguest-{name}")
        cmds = (("ifdown", "--force", name.value), ("ifup", name.value))
        return Plan(path, text, 0o644, cmds, cmds)
    raise ValueError(f"unknown network stack {stack!r}")


@dataclass
class NetConfigurator:
    """Applies IpConfig objects; ``apply()`` returns the status for the host.

    ``stack``: "auto" (detect), "none" (refuse) or one of ``RENDERERS``; ``timeout``:
    the whole operation's deadline; ``runner``, ``which``, ``clock``: injectable for
    tests."""

    paths: Paths
    _: KW_ONLY
    stack: str = "auto"
    timeout: float = 20.0
    runner: Runner = run_command
    which: Callable[[str], str | None] = shutil.which
    clock: Callable[[], float] = time.monotonic

    def apply(self, config: IpConfig) -> Outcome:
        deadline = self.clock() + self.timeout
        found = find_interface(self.paths, config.adapter_id)
        if found is None:
            return Outcome(
                HvStatus.HV_GUID_NOTFOUND, f"no network interface has VMBus id {config.adapter_id}"
            )
        if self.stack == "none":
            return Outcome(
                HvStatus.HV_E_FAIL,
                "applying host IP settings is disabled (kvp.network_stack: none)",
            )
        stack = detect_stack(self.paths, self.which) if self.stack == "auto" else self.stack
        if stack is None:
            return Outcome(
                HvStatus.HV_E_FAIL,
                "no supported network stack found"
                " (NetworkManager, systemd-networkd, netplan, ifupdown)",
            )
        try:
            name = LinkName(found)
        except ValueError as exc:
            return Outcome(HvStatus.HV_E_FAIL, str(exc))
        plan = plan_for(stack, self.paths, config, name, interface_mac(self.paths, found))
        previous = _read_bytes(plan.path)
        try:
            atomic_write(plan.path, plan.text, mode=plan.mode)
        except OSError as exc:
            return Outcome(HvStatus.HV_E_FAIL, f"cannot write {plan.path}: {exc.strerror}")
        failure = self._run(plan.commands, deadline)
        if failure is None:
            return Outcome(HvStatus.HV_S_OK, f"{name} configured through {stack} ({plan.path})")
        self._restore(plan, previous, deadline)
        return Outcome(
            HvStatus.HV_E_FAIL,
            f"{stack} rejected the settings for {name}: {failure}; previous configuration restored",
        )

    def _run(
        self, commands: Sequence[Sequence[str]], deadline: float, *, keep_reserve: bool = True
    ) -> str | None:
        for i, argv in enumerate(commands):
            remaining = deadline - self.clock()
            # Each command gets its share of what is left; when applying, one more
            # share stays in reserve for the rollback.
            share = remaining / (len(commands) - i + (1 if keep_reserve else 0))
            if share <= 0.1:
                return f"no time left for {' '.join(argv)}"
            result = self.runner(argv, share)
            if not result.ok:
                # The tail goes into the host's log line: no control characters from the tool.
                tail = escaped(result.output[-OUTPUT_TAIL:])
                return f"{' '.join(argv)} exited {result.code}" + (f": {tail}" if tail else "")
        return None

    def _restore(self, plan: Plan, previous: bytes | None, deadline: float) -> None:
        try:
            if previous is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(plan.path)
            else:
                atomic_write(plan.path, previous, mode=plan.mode)
        except OSError as exc:
            log.error("cannot restore %s: %s", plan.path, exc)
            return
        failure = self._run(plan.restore, deadline, keep_reserve=False)
        if failure:
            log.error("re-applying the previous configuration (%s) failed: %s", plan.path, failure)


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None
