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

Files are written atomically (temporary file, fsync, rename). If a command fails or
runs out of time, the previous files are put back and the stack is reloaded again, so
a bad push leaves the guest as it was. Every command gets a share of one deadline so
the whole operation ends inside the kernel's 30 s window.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hvguest.kvp.ipinfo import run_root
from hvguest.paths import Paths
from hvguest.wire.status import HvStatus

log = logging.getLogger(__name__)


class IpConfigLike(Protocol):
    """A validated SET_IP_INFO request (hvguest.roles.kvp.IpConfig)."""

    @property
    def adapter_id(self) -> str: ...
    @property
    def dhcp(self) -> bool: ...
    @property
    def addresses(self) -> tuple[str, ...]: ...
    @property
    def gateways(self) -> tuple[str, ...]: ...
    @property
    def dns(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Outcome:
    status: int
    detail: str


Runner = Callable[[Sequence[str], float], tuple[int, str]]


def run_command(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    """Run without a shell; (exit code, stderr tail). 124 on timeout, 127 if missing.

    The tool runs in its own process group: on timeout the whole group is killed, so
    a helper it started cannot keep our stderr pipe (and us) waiting.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return 127, str(exc)
    try:
        _out, err = proc.communicate(timeout=max(0.1, timeout))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=1.0)
        return 124, f"timed out after {timeout:.1f} s"
    return proc.returncode, err.decode("utf-8", "replace").strip()[-300:]


def find_interface(paths: Paths, guid: str) -> str | None:
    """The interface whose VMBus device_id is ``guid`` (any case, with or without braces)."""
    net = os.path.join(paths.sys, "class", "net")
    try:
        names = sorted(os.listdir(net))
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(net, name, "device", "device_id"), encoding="ascii") as f:
                device_id = f.read().strip().strip("{}").lower()
        except (OSError, UnicodeDecodeError):
            continue
        if device_id == guid:
            return name
    return None


def interface_mac(paths: Paths, name: str) -> str:
    try:
        with open(os.path.join(paths.sys, "class", "net", name, "address"), encoding="ascii") as f:
            return f.read().strip().upper()
    except OSError:
        return ""


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
    if os.path.isdir(os.path.join(run, "systemd", "netif")) and which("networkctl"):
        return "networkd"
    if os.path.exists(os.path.join(etc, "network", "interfaces")) and which("ifup"):
        return "ifupdown"
    return None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


# -- renderers ---------------------------------------------------------------------


def _split(
    config: IpConfigLike,
) -> tuple[list[str], list[str], list[str], list[str], list[str], list[str]]:
    v4 = [a for a in config.addresses if ipaddress.ip_interface(a).version == 4]
    v6 = [a for a in config.addresses if ipaddress.ip_interface(a).version == 6]
    gw4 = [g for g in config.gateways if ipaddress.ip_address(g).version == 4]
    gw6 = [g for g in config.gateways if ipaddress.ip_address(g).version == 6]
    dns4 = [d for d in config.dns if ipaddress.ip_address(d).version == 4]
    dns6 = [d for d in config.dns if ipaddress.ip_address(d).version == 6]
    return v4, v6, gw4, gw6, dns4, dns6


def render_nmconnection(config: IpConfigLike, name: str, mac: str) -> str:
    v4, v6, gw4, gw6, dns4, dns6 = _split(config)
    lines = [
        "[connection]",
        f"id=hvguest-{name}",
        "type=ethernet",
        f"interface-name={name}",
        "autoconnect=true",
        "",
        "[ethernet]",
    ]
    if mac:
        lines.append(f"mac-address={mac}")
    lines += ["", "[ipv4]"]
    if config.dhcp:
        lines.append("method=auto")
    elif v4:
        lines.append("method=manual")
        lines += [f"address{i}={a}" for i, a in enumerate(v4, 1)]
    else:
        lines.append("method=disabled")
    if gw4 and not config.dhcp:
        lines.append(f"gateway={gw4[0]}")
    if dns4:
        lines.append("dns=" + ";".join(dns4) + ";")
    lines += ["", "[ipv6]"]
    if v6 and not config.dhcp:
        lines.append("method=manual")
        lines += [f"address{i}={a}" for i, a in enumerate(v6, 1)]
    else:
        lines.append("method=auto")
    if gw6 and not config.dhcp:
        lines.append(f"gateway={gw6[0]}")
    if dns6:
        lines.append("dns=" + ";".join(dns6) + ";")
    return "\n".join(lines) + "\n"


def render_networkd(config: IpConfigLike, name: str, mac: str) -> str:
    lines = [
        "# Written by hvguest-kvpd from the Hyper-V host's SET_IP_INFO.",
        "[Match]",
        f"Name={name}",
    ]
    if mac:
        lines.append(f"MACAddress={mac.lower()}")
    lines += ["", "[Network]"]
    if config.dhcp:
        lines.append("DHCP=ipv4")
    else:
        lines += [f"Address={a}" for a in config.addresses]
        lines += [f"Gateway={g}" for g in config.gateways]
    lines += [f"DNS={d}" for d in config.dns]
    return "\n".join(lines) + "\n"


def render_netplan(config: IpConfigLike, name: str, mac: str) -> str:
    # Flow style JSON is valid YAML and needs no YAML library here.
    import json

    eth: dict[str, object] = {}
    if mac:
        eth["match"] = {"macaddress": mac.lower()}
        eth["set-name"] = name
    if config.dhcp:
        eth["dhcp4"] = True
    else:
        eth["dhcp4"] = False
        if config.addresses:
            eth["addresses"] = list(config.addresses)
        routes = [{"to": "default", "via": g} for g in config.gateways]
        if routes:
            eth["routes"] = routes
    if config.dns:
        eth["nameservers"] = {"addresses": list(config.dns)}
    doc = {"network": {"version": 2, "ethernets": {name: eth}}}
    return (
        "# Written by hvguest-kvpd from the Hyper-V host's SET_IP_INFO.\n"
        + json.dumps(doc, indent=2)
        + "\n"
    )


def render_ifupdown(config: IpConfigLike, name: str, mac: str) -> str:
    v4, v6, gw4, gw6, dns4, dns6 = _split(config)
    lines = ["# Written by hvguest-kvpd from the Hyper-V host's SET_IP_INFO.", f"auto {name}"]
    if config.dhcp:
        lines.append(f"iface {name} inet dhcp")
    elif v4:
        lines.append(f"iface {name} inet static")
        lines.append(f"    address {v4[0]}")
        if gw4:
            lines.append(f"    gateway {gw4[0]}")
        if config.dns:
            lines.append("    dns-nameservers " + " ".join(config.dns))
        for extra in v4[1:]:
            lines.append(f"    up ip addr add {extra} dev {name}")
    for i, a in enumerate(v6 if not config.dhcp else []):
        if i == 0:
            lines.append(f"iface {name} inet6 static")
            lines.append(f"    address {a}")
            if gw6:
                lines.append(f"    gateway {gw6[0]}")
        else:
            lines.append(f"    up ip -6 addr add {a} dev {name}")
    return "\n".join(lines) + "\n"


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


def plan_for(stack: str, paths: Paths, config: IpConfigLike, name: str, mac: str) -> Plan:
    etc = paths.os_etc
    cmds: tuple[tuple[str, ...], ...]
    if stack == "networkmanager":
        path = os.path.join(
            etc, "NetworkManager", "system-connections", f"hvguest-{name}.nmconnection"
        )
        cmds = (("nmcli", "connection", "reload"), ("nmcli", "connection", "up", f"hvguest-{name}"))
        # our profile may be gone again: let NetworkManager pick the best one left
        restore = (("nmcli", "connection", "reload"), ("nmcli", "device", "connect", name))
        return Plan(path, render_nmconnection(config, name, mac), 0o600, cmds, restore)
    if stack == "networkd":
        path = os.path.join(etc, "systemd", "network", f"10-hvguest-{name}.network")
        cmds = (("networkctl", "reload"), ("networkctl", "reconfigure", name))
        return Plan(path, render_networkd(config, name, mac), 0o644, cmds, cmds)
    if stack == "netplan":
        path = os.path.join(etc, "netplan", f"90-hvguest-{name}.yaml")
        cmds = (("netplan", "apply"),)
        return Plan(path, render_netplan(config, name, mac), 0o600, cmds, cmds)
    if stack == "ifupdown":
        path = os.path.join(etc, "network", "interfaces.d", f"hvguest-{name}")
        cmds = (("ifdown", "--force", name), ("ifup", name))
        return Plan(path, render_ifupdown(config, name, mac), 0o644, cmds, cmds)
    raise ValueError(f"unknown network stack {stack!r}")


def atomic_write(path: str, text: str | bytes, mode: int) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hvguest-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class NetConfigurator:
    """Applies IpConfig objects; ``apply()`` returns the status for the host."""

    def __init__(
        self,
        paths: Paths,
        *,
        stack: str = "auto",
        timeout: float = 20.0,
        runner: Runner = run_command,
        which: Callable[[str], str | None] = shutil.which,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = paths
        self.stack = stack
        self.timeout = timeout
        self.runner = runner
        self.which = which
        self.clock = clock

    def apply(self, config: IpConfigLike) -> Outcome:
        deadline = self.clock() + self.timeout
        name = find_interface(self.paths, config.adapter_id)
        if name is None:
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
        plan = plan_for(stack, self.paths, config, name, interface_mac(self.paths, name))
        previous = _read_bytes(plan.path)
        try:
            atomic_write(plan.path, plan.text, plan.mode)
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
            code, err = self.runner(argv, share)
            if code != 0:
                return f"{' '.join(argv)} exited {code}" + (f": {err}" if err else "")
        return None

    def _restore(self, plan: Plan, previous: bytes | None, deadline: float) -> None:
        try:
            if previous is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(plan.path)
            else:
                atomic_write(plan.path, previous, plan.mode)
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
