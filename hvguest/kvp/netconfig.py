"""Apply a host-pushed IP configuration (SET_IP_INFO) through the guest's network stack.

hv_kvp_daemon writes an ifcfg file and a NetworkManager keyfile and hands both to a
distribution script, which only works on RHEL-like systems with NetworkManager. Here the
stack that actually manages the guest is detected (NetworkManager, systemd-networkd,
netplan, ifupdown) and configured natively:

* NetworkManager: keyfile ``/etc/NetworkManager/system-connections/hvguest-<if>.nmconnection``
  (mode 0600), ``nmcli connection reload`` and ``nmcli connection up``;
* systemd-networkd: ``/etc/systemd/network/10-hvguest-<if>.network``, ``networkctl reload``
  and ``networkctl reconfigure <if>``;
* netplan: ``/etc/netplan/90-hvguest-<if>.yaml`` (mode 0600), ``netplan generate``, then
  the running renderer's reload as above (``netplan apply`` only when neither networkd
  nor NetworkManager runs: it reloads all of systemd, which alone can outlast the
  kernel's window on a slow guest);
* ifupdown: ``/etc/network/interfaces.d/hvguest-<if>`` maps the interface to the logical
  interface ``hvguest-<if>`` (so the image's own ``iface <if>`` stanza stays as it is and
  is simply no longer used); ``ifdown`` before the file changes (under the configuration
  that brought the interface up), ``ifup`` after, each as a transient systemd service
  where systemd runs (the DHCP client ifup starts is then not kvpd's child).

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
from hvguest.kvp.netrender import RENDERERS, render_ifupdown
from hvguest.paths import Paths
from hvguest.proc import systemd_running
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


def networkmanager_running(paths: Paths) -> bool:
    return os.path.exists(os.path.join(run_root(paths), "NetworkManager"))


def networkd_running(paths: Paths) -> bool:
    # networkd running keeps its manager state in netif/state; the directories alone
    # are made by systemd's tmpfiles at every boot, networkd enabled or not.
    return os.path.exists(os.path.join(run_root(paths), "systemd", "netif", "state"))


def detect_stack(paths: Paths, which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The stack managing this guest's network: the first one found running/configured."""
    etc = paths.os_etc
    if (
        os.path.isdir(os.path.join(etc, "netplan"))
        and any(n.endswith(".yaml") for n in _listdir(os.path.join(etc, "netplan")))
        and which("netplan")
    ):
        return "netplan"
    if networkmanager_running(paths) and which("nmcli"):
        return "networkmanager"
    if networkd_running(paths) and which("networkctl"):
        return "networkd"
    if os.path.exists(os.path.join(etc, "network", "interfaces")) and which("ifup"):
        return "ifupdown"
    return None


def ipv6_enabled(paths: Paths, name: LinkName) -> bool:
    """IPv6 is on for the interface (its disable_ipv6 sysctl reads 0). Off, or absent
    (ipv6.disable=1), an ``inet6`` stanza would fail ifup waiting for a link-local
    address."""
    path = os.path.join(paths.proc, "sys", "net", "ipv6", "conf", name.value, "disable_ipv6")
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() == "0"
    except (OSError, UnicodeDecodeError):
        return False


def _listdir(path: str) -> list[str]:
    """The names in ``path``; none when it cannot be listed (no such stack, no sysfs)."""
    try:
        return os.listdir(path)
    except OSError:
        return []


# -- applying ------------------------------------------------------------------------


Argvs = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Plan:
    path: str
    text: str
    mode: int
    commands: Argvs
    # After a failure, with the previous file back (or ours gone): bring the previous
    # configuration up again.
    restore: Argvs
    # Run before the file changes, both ways: ifupdown takes an interface down with the
    # stanzas that brought it up, so they must still be there.
    release: Argvs = ()
    # Run the stack's commands as transient systemd services (as_transient_unit).
    transient: bool = False


# iproute2 on one interface: done in milliseconds. Such a command runs within a fixed
# short limit instead of taking a share of the deadline from the stack's own tools.
QUICK_TOOLS = frozenset({"ip"})
QUICK_LIMIT = 3.0


def _heavy(commands: Sequence[Sequence[str]]) -> int:
    return sum(1 for argv in commands if argv[0] not in QUICK_TOOLS)


def as_transient_unit(argv: Sequence[str], limit: float) -> tuple[str, ...]:
    """``argv`` run by systemd as a service of its own, waited for (``--pipe``: its
    output and exit status come back here), instead of as kvpd's child. ifup starts a
    DHCP client that must outlive the request: as kvpd's child it would run inside
    kvpd's sandbox (its hooks unable to update the resolver) and be killed with
    hvguest-kvp.service; this way it runs as it does when networking.service or
    ifup@.service starts it. ``KillMode=process``: when ifup exits, what it started
    stays; ``RuntimeMaxSec``: systemd stops the command itself at the end of its share,
    just before kvpd would give up waiting for it. (``simple``, not ``exec``: the
    systemd of older ifupdown systems, 237 on Ubuntu 18.04, has no ``exec``.)"""
    return (
        "systemd-run", "--quiet", "--pipe", "--wait", "--collect", "--service-type=simple",
        "-p", "KillMode=process", "-p", f"RuntimeMaxSec={max(1, int(limit))}",
        f"--description=hvguest-kvpd SET_IP_INFO: {' '.join(argv)}", *argv,
    )  # fmt: skip


def _networkd_activation(name: LinkName) -> Argvs:
    return (("networkctl", "reload"), ("networkctl", "reconfigure", name.value))


def _nm_activation(name: LinkName, profile: str) -> tuple[Argvs, Argvs]:
    """(apply, restore): the restore brings the device up with whatever profile is best
    once ours may be gone again."""
    reload = ("nmcli", "connection", "reload")
    return (
        (reload, ("nmcli", "connection", "up", profile)),
        (reload, ("nmcli", "device", "connect", name.value)),
    )


def plan_for(
    stack: str,
    paths: Paths,
    config: IpConfig,
    name: LinkName,
    mac: MacAddress | None,
    *,
    transient_units: bool = False,
) -> Plan:
    """The file and the commands for ``stack``. ``transient_units``: run ifupdown's
    commands through systemd-run (systemd is PID 1)."""
    if stack not in RENDERERS:
        raise ValueError(f"unknown network stack {stack!r}")
    if stack == "ifupdown":
        text = render_ifupdown(config, name, mac, ipv6_auto=ipv6_enabled(paths, name))
    else:
        text = RENDERERS[stack](config, name, mac)
    etc = paths.os_etc
    if stack == "networkmanager":
        path = os.path.join(
            etc, "NetworkManager", "system-connections", f"hvguest-{name}.nmconnection"
        )
        return Plan(path, text, 0o600, *_nm_activation(name, f"hvguest-{name}"))
    if stack == "networkd":
        path = os.path.join(etc, "systemd", "network", f"10-hvguest-{name}.network")
        reload = _networkd_activation(name)
        return Plan(path, text, 0o644, reload, reload)
    if stack == "netplan":
        path = os.path.join(etc, "netplan", f"90-hvguest-{name}.yaml")
        if networkd_running(paths):
            apply = restore = _networkd_activation(name)
        elif networkmanager_running(paths):
            # netplan names the profile it renders for a device netplan-<id>.
            apply, restore = _nm_activation(name, f"netplan-{name}")
        else:
            everything = (("netplan", "apply"),)
            return Plan(path, text, 0o600, everything, everything)
        generate = ("netplan", "generate")
        return Plan(path, text, 0o600, (generate, *apply), (generate, *restore))
    if stack == "ifupdown":
        path = os.path.join(etc, "network", "interfaces.d", f"hvguest-{name}")
        # No --force: ifdown then takes down the logical interface its state records
        # (hvguest-<if> or the image's own), with --force it would use <if>'s stanza.
        down = ("ifdown", name.value)
        up = ("ifup", name.value)
        cmds: Argvs = (up,)
        if any(a.version == 6 for a in config.addresses) and not config.dhcp:
            # Static IPv6 means these addresses only: ifup's inet6 static turns router
            # advertisements off, but what they gave before (a SLAAC address, a
            # default route) stays until it expires.
            cmds += (
                ("ip", "-6", "address", "flush", "dev", name.value, "dynamic"),
                ("ip", "-6", "route", "flush", "dev", name.value, "proto", "ra"),
            )
        return Plan(path, text, 0o644, cmds, (up,), release=(down,), transient=transient_units)
    raise ValueError(f"unknown network stack {stack!r}")


@dataclass
class NetConfigurator:
    """Applies IpConfig objects; ``apply()`` returns the status for the host.

    ``stack``: "auto" (detect), "none" (refuse) or one of ``RENDERERS``; ``timeout``:
    the whole operation's deadline; ``runner``, ``which``, ``clock``,
    ``transient_units``: injectable for tests."""

    paths: Paths
    _: KW_ONLY
    stack: str = "auto"
    timeout: float = 20.0
    runner: Runner = run_command
    which: Callable[[str], str | None] = shutil.which
    clock: Callable[[], float] = time.monotonic
    # None: through systemd-run where systemd runs (see as_transient_unit).
    transient_units: bool | None = None

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
        plan = plan_for(
            stack,
            self.paths,
            config,
            name,
            interface_mac(self.paths, found),
            transient_units=self._transient_units(),
        )
        previous = _read_bytes(plan.path)
        failure = self._run(plan, plan.release, deadline, later=_heavy(plan.commands))
        if failure is None:
            try:
                atomic_write(plan.path, plan.text, mode=plan.mode)
            except OSError as exc:
                failure = f"cannot write {plan.path}: {exc.strerror}"
                if not plan.release:  # nothing ran, nothing changed
                    return Outcome(HvStatus.HV_E_FAIL, failure)
            else:
                failure = self._run(plan, plan.commands, deadline)
        if failure is None:
            return Outcome(HvStatus.HV_S_OK, f"{name} configured through {stack} ({plan.path})")
        self._restore(plan, previous, deadline)
        return Outcome(
            HvStatus.HV_E_FAIL,
            f"{stack} rejected the settings for {name}: {failure}; previous configuration restored",
        )

    def _transient_units(self) -> bool:
        if self.transient_units is not None:
            return self.transient_units
        return systemd_running(self.paths) and self.which("systemd-run") is not None

    def _run(
        self,
        plan: Plan,
        commands: Sequence[Sequence[str]],
        deadline: float,
        *,
        later: int = 0,
        keep_reserve: bool = True,
    ) -> str | None:
        """Run ``commands`` in order; the first failure's description, or None.

        ``later``: how many of the stack's commands still follow this batch (each will
        get its share)."""
        for i, argv in enumerate(commands):
            remaining = deadline - self.clock()
            quick = argv[0] in QUICK_TOOLS
            if quick:
                limit = min(QUICK_LIMIT, remaining)
            else:
                # Each of the stack's commands gets its share of what is left; when
                # applying, one more share stays in reserve for the rollback.
                limit = remaining / (_heavy(commands[i:]) + later + (1 if keep_reserve else 0))
            if limit <= 0.1:
                return f"no time left for {' '.join(argv)}"
            run = argv
            if plan.transient and not quick:
                run = as_transient_unit(argv, limit - 0.5)
            result = self.runner(run, limit)
            if not result.ok:
                # The tail goes into the host's log line: no control characters from the tool.
                tail = escaped(result.output[-OUTPUT_TAIL:])
                return f"{' '.join(argv)} exited {result.code}" + (f": {tail}" if tail else "")
        return None

    def _restore(self, plan: Plan, previous: bytes | None, deadline: float) -> None:
        failure = self._run(
            plan, plan.release, deadline, later=_heavy(plan.restore), keep_reserve=False
        )
        if failure:
            log.error("taking %s down for the roll-back failed: %s", plan.path, failure)
        try:
            if previous is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(plan.path)
            else:
                atomic_write(plan.path, previous, mode=plan.mode)
        except OSError as exc:
            log.error("cannot restore %s: %s", plan.path, exc)
            return
        failure = self._run(plan, plan.restore, deadline, keep_reserve=False)
        if failure:
            log.error("re-applying the previous configuration (%s) failed: %s", plan.path, failure)


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None
