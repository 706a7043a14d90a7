"""Per-adapter IP information for GET_IP_INFO (protocol.md §2.6), without shell scripts.

Addresses and default routes come from the kernel over rtnetlink; DNS servers and the
DHCP state from the state files of the network stack that manages the interface
(systemd-networkd/resolved, NetworkManager, ifupdown, ifcfg), falling back to
/etc/resolv.conf and to the kernel's own view (a leased address has a finite lifetime).
Every path is under the injectable roots.

Output formats follow hv_kvp_daemon so the host parses them the same way: addresses
joined with ``;``; subnets dotted (IPv4) or ``/64`` (IPv6); gateways and DNS servers each
followed by ``;``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import socket
from typing import TYPE_CHECKING

from hvguest.kvp.netlink import Address, Link, NetlinkReader, Snapshot
from hvguest.paths import Paths

if TYPE_CHECKING:
    import configparser
from hvguest.wire.kvp import (
    ADDR_FAMILY_IPV4,
    ADDR_FAMILY_IPV6,
    MAX_GATEWAY_SIZE,
    MAX_IP_ADDR_SIZE,
    KvpIpInfo,
)

log = logging.getLogger(__name__)


def os_root(paths: Paths) -> str:
    """The root the OS configuration lives under: the parent of ``paths.os_etc``."""
    return os.path.dirname(paths.os_etc.rstrip("/")) or "/"


def run_root(paths: Paths) -> str:
    return paths.extra.get("os_run", os.path.join(os_root(paths), "run"))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def join_limited(items: list[str], limit: int, *, trailing: bool = False) -> str:
    """``;``-join whole items while the text stays under ``limit`` bytes (NUL excluded)."""
    out = ""
    for item in items:
        candidate = (out + item + ";") if trailing else (out + ";" + item if out else item)
        if len(candidate.encode()) > limit - 1:
            break
        out = candidate
    return out


class IpInfoSource:
    """Answers ``ip_info(mac, family)`` for the KVP role."""

    def __init__(self, paths: Paths, reader: NetlinkReader | None = None) -> None:
        self.paths = paths
        self.reader = reader or NetlinkReader()

    def ip_info(self, mac: str, addr_family: int) -> KvpIpInfo | None:
        snap = self.reader.snapshot()
        candidates = [link for link in snap.links if link.mac == mac and not link.loopback]
        if not candidates:
            return None
        best: KvpIpInfo | None = None
        for link in candidates:  # a VF can share the synthetic NIC's MAC: first with addresses
            info = self.for_link(snap, link)
            best = info
            if info.ip_addr:
                break
        return best

    def for_link(self, snap: Snapshot, link: Link) -> KvpIpInfo:
        addrs = [a for a in snap.addresses if a.index == link.index]
        # The kernel dumps IPv4 before IPv6, as getifaddrs() reports them.
        addrs.sort(key=lambda a: 0 if a.family == socket.AF_INET else 1)
        family = 0
        for a in addrs:
            family |= ADDR_FAMILY_IPV4 if a.family == socket.AF_INET else ADDR_FAMILY_IPV6
        ips = [a.address for a in addrs]
        masks = [a.netmask for a in addrs]
        gateways = [r.gateway for r in snap.default_routes if r.oif == link.index]
        return KvpIpInfo(
            adapter_id=mac_of(link),
            addr_family=family,
            dhcp_enabled=self.dhcp_enabled(link, addrs),
            ip_addr=join_limited(ips, MAX_IP_ADDR_SIZE * 2),
            sub_net=join_limited(masks, MAX_IP_ADDR_SIZE * 2),
            gate_way=join_limited(gateways, MAX_GATEWAY_SIZE * 2, trailing=True),
            dns_addr=join_limited(self.dns_servers(link), MAX_IP_ADDR_SIZE * 2, trailing=True),
        )

    # -- DNS ---------------------------------------------------------------

    def dns_servers(self, link: Link) -> list[str]:
        run = run_root(self.paths)
        # systemd-resolved / networkd know the servers of each link.
        for path in (
            os.path.join(run, "systemd", "resolve", "netif", str(link.index)),
            os.path.join(run, "systemd", "netif", "links", str(link.index)),
        ):
            servers = _key_list(_read(path), ("SERVERS", "DNS"))
            if servers:
                return servers
        servers = _nameservers(_read(os.path.join(self.paths.os_etc, "resolv.conf")))
        if servers and all(s.startswith("127.0.0.53") for s in servers):
            # The resolved stub: its upstream servers are in resolved's own file.
            upstream = _nameservers(_read(os.path.join(run, "systemd", "resolve", "resolv.conf")))
            servers = upstream or servers
        return servers

    # -- DHCP --------------------------------------------------------------

    def dhcp_enabled(self, link: Link, addrs: list[Address]) -> bool:
        for probe in (self._networkd_dhcp, self._nm_dhcp, self._ifupdown_dhcp, self._ifcfg_dhcp):
            verdict = probe(link)
            if verdict is not None:
                return verdict
        return any(a.family == socket.AF_INET and a.dynamic for a in addrs)

    def _networkd_dhcp(self, link: Link) -> bool | None:
        run = run_root(self.paths)
        state = _read(os.path.join(run, "systemd", "netif", "links", str(link.index)))
        if not state or "ADMIN_STATE=unmanaged" in state:
            return None
        if os.path.exists(os.path.join(run, "systemd", "netif", "leases", str(link.index))):
            return True
        match = re.search(r"^NETWORK_FILE=(.+)$", state, re.M)
        if not match:
            return None
        network = _ini(_read(self._rooted(match.group(1).strip())))
        value = network.get("Network", "DHCP", fallback="no").strip().lower()
        return value in ("yes", "true", "ipv4", "1", "on")

    def _nm_dhcp(self, link: Link) -> bool | None:
        run = run_root(self.paths)
        if not os.path.isdir(os.path.join(run, "NetworkManager")):
            return None
        dirs = (
            os.path.join(self.paths.os_etc, "NetworkManager", "system-connections"),
            os.path.join(run, "NetworkManager", "system-connections"),
        )
        for directory in dirs:
            for path in sorted(glob.glob(os.path.join(directory, "*"))):
                conf = _ini(_read(path))
                name = conf.get("connection", "interface-name", fallback="")
                mac = conf.get("ethernet", "mac-address", fallback="").upper()
                if name == link.name or (mac and mac == link.mac):
                    return conf.get("ipv4", "method", fallback="auto").strip() == "auto"
        return None

    def _ifupdown_dhcp(self, link: Link) -> bool | None:
        run = run_root(self.paths)
        state = _read(os.path.join(run, "network", "ifstate." + link.name))
        if not state:
            match = re.search(
                rf"^{re.escape(link.name)}=(\S+)",
                _read(os.path.join(run, "network", "ifstate")),
                re.M,
            )
            state = match.group(1) if match else ""
        conf_name = state.strip().split("=")[-1]
        if not conf_name:
            return None
        files = [os.path.join(self.paths.os_etc, "network", "interfaces")]
        files += sorted(glob.glob(os.path.join(self.paths.os_etc, "network", "interfaces.d", "*")))
        pattern = re.compile(rf"^\s*iface\s+{re.escape(conf_name)}\s+inet\s+(\S+)", re.M)
        for path in files:
            match = pattern.search(_read(path))
            if match:
                return match.group(1) == "dhcp"
        return None

    def _ifcfg_dhcp(self, link: Link) -> bool | None:
        text = _read(
            os.path.join(self.paths.os_etc, "sysconfig", "network-scripts", "ifcfg-" + link.name)
        )
        if not text:
            return None
        match = re.search(r"^BOOTPROTO=[\"']?(\w+)", text, re.M)
        return bool(match and match.group(1).lower() == "dhcp")

    def _rooted(self, path: str) -> str:
        return os.path.join(os_root(self.paths), path.lstrip("/"))


def mac_of(link: Link) -> str:
    return link.mac


def _key_list(text: str, keys: tuple[str, ...]) -> list[str]:
    for key in keys:
        match = re.search(rf"^{key}=(.*)$", text, re.M)
        if match and match.group(1).strip():
            # resolved writes "addr" or "addr#name" or "addr:port"; keep the address
            servers = []
            for item in match.group(1).split():
                item = item.split("#", 1)[0]
                if item.count(":") == 1:  # IPv4 with a port
                    item = item.split(":", 1)[0]
                servers.append(item.split("%", 1)[0])
            return servers
    return []


def _nameservers(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append(parts[1])
    return out


def _ini(text: str) -> configparser.ConfigParser:
    import configparser  # only for DHCP probes: keep it out of the daemon's baseline

    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    with contextlib.suppress(configparser.Error):
        parser.read_string(text)
    return parser
