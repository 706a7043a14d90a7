"""The configuration file of each network stack for a host-pushed IP configuration.

Renderers take only typed values: an ``IpConfig`` (addresses as ``ipaddress`` objects
without zone ids), a ``LinkName`` and a ``MacAddress`` (or None). Every address is
written through ``hvguest.wire.ipconfig.text()``, so a file can only ever receive hex
digits, dots, colons and one slash from the host (ifup substitutes the ifupdown values
into the shell commands it runs: there too, nothing else can arrive).
"""

from __future__ import annotations

import json

from hvguest.wire.ipconfig import IpConfig, LinkName, MacAddress, text

HEADER = "# Written by hvguest-kvpd from the Hyper-V host's SET_IP_INFO."


class Split:
    """The request's values by family, as text."""

    def __init__(self, config: IpConfig, name: LinkName, mac: MacAddress | None) -> None:
        # A raw str must not get this far: the types are the guarantee, so check them.
        if not isinstance(config, IpConfig):
            raise TypeError(f"an IpConfig is needed, not {type(config).__name__}")
        if not isinstance(name, LinkName):
            raise TypeError(f"a LinkName is needed, not {type(name).__name__}")
        if mac is not None and not isinstance(mac, MacAddress):
            raise TypeError(f"a MacAddress or None is needed, not {type(mac).__name__}")
        self.v4 = [text(a) for a in config.addresses if a.version == 4]
        self.v6 = [text(a) for a in config.addresses if a.version == 6]
        self.gw4 = [text(g) for g in config.gateways if g.version == 4]
        self.gw6 = [text(g) for g in config.gateways if g.version == 6]
        self.dns4 = [text(d) for d in config.dns if d.version == 4]
        self.dns6 = [text(d) for d in config.dns if d.version == 6]
        self.addresses = [text(a) for a in config.addresses]
        self.gateways = [text(g) for g in config.gateways]
        self.dns = [text(d) for d in config.dns]


def render_nmconnection(config: IpConfig, name: LinkName, mac: MacAddress | None) -> str:
    s = Split(config, name, mac)
    lines = [
        "[connection]",
        f"id=hvguest-{name}",
        "type=ethernet",
        f"interface-name={name}",
        "autoconnect=true",
        "",
        "[ethernet]",
    ]
    if mac is not None:
        lines.append(f"mac-address={mac}")
    v4_method = "auto" if config.dhcp else ("manual" if s.v4 else "disabled")
    v6_method = "manual" if s.v6 and not config.dhcp else "auto"
    # A static gateway only where the addresses are static too.
    no_gateway: list[str] = []
    lines += _nm_ip_section("ipv4", v4_method, s.v4, no_gateway if config.dhcp else s.gw4, s.dns4)
    lines += _nm_ip_section("ipv6", v6_method, s.v6, no_gateway if config.dhcp else s.gw6, s.dns6)
    return "\n".join(lines) + "\n"


def _nm_ip_section(
    section: str, method: str, addresses: list[str], gateways: list[str], dns: list[str]
) -> list[str]:
    """One address family's keyfile section; addresses are listed for "manual" only."""
    lines = ["", f"[{section}]", f"method={method}"]
    if method == "manual":
        lines += [f"address{i}={a}" for i, a in enumerate(addresses, 1)]
    if gateways:
        lines.append(f"gateway={gateways[0]}")
    if dns:
        lines.append("dns=" + ";".join(dns) + ";")
    return lines


def render_networkd(config: IpConfig, name: LinkName, mac: MacAddress | None) -> str:
    s = Split(config, name, mac)
    lines = [HEADER, "[Match]", f"Name={name}"]
    if mac is not None:
        lines.append(f"MACAddress={mac.lower}")
    lines += ["", "[Network]"]
    if config.dhcp:
        lines.append("DHCP=ipv4")
    else:
        lines += [f"Address={a}" for a in s.addresses]
        lines += [f"Gateway={g}" for g in s.gateways]
        if s.v6:
            # Static IPv6 means these addresses only, as NetworkManager's "manual":
            # no SLAAC address or RA default route besides them.
            lines.append("IPv6AcceptRA=no")
    lines += [f"DNS={d}" for d in s.dns]
    return "\n".join(lines) + "\n"


def render_netplan(config: IpConfig, name: LinkName, mac: MacAddress | None) -> str:
    # Flow-style JSON is valid YAML and needs no YAML library here.
    s = Split(config, name, mac)
    eth: dict[str, object] = {}
    if mac is not None:
        eth["match"] = {"macaddress": mac.lower}
        eth["set-name"] = str(name)
    if config.dhcp:
        eth["dhcp4"] = True
    else:
        eth["dhcp4"] = False
        if s.addresses:
            eth["addresses"] = s.addresses
        if s.gateways:
            eth["routes"] = [{"to": "default", "via": g} for g in s.gateways]
        if s.v6:
            eth["accept-ra"] = False  # as networkd's IPv6AcceptRA=no above
    if s.dns:
        eth["nameservers"] = {"addresses": s.dns}
    doc = {"network": {"version": 2, "ethernets": {str(name): eth}}}
    return HEADER + "\n" + json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


# Installed by the package: prints "hvguest-<its argument>", the logical interface below.
IFUPDOWN_MAPPING_SCRIPT = "/usr/lib/hvguest/ifupdown-mapping"


def ifupdown_logical(name: LinkName) -> str:
    return f"hvguest-{name}"


def render_ifupdown(
    config: IpConfig, name: LinkName, mac: MacAddress | None, *, ipv6_auto: bool = False
) -> str:
    """Stanzas for the logical interface ``hvguest-<if>`` and the mapping that makes
    ``ifup <if>`` (and ``ifup -a`` at boot) use them: the image's own ``iface <if>``
    stanzas stay untouched and unused while this file exists, and are used again once
    it is gone.

    ``ipv6_auto`` (IPv6 is enabled on the interface): without static IPv6 addresses
    from the host, an ``inet6 auto`` stanza keeps or brings back router advertisements
    and SLAAC, as NetworkManager's ``ipv6.method=auto`` and networkd's defaults do (a
    static push before turned them off)."""
    s = Split(config, name, mac)
    logical = ifupdown_logical(name)
    lines = [HEADER, f"auto {name}", f"mapping {name}", f"    script {IFUPDOWN_MAPPING_SCRIPT}"]
    # resolvconf's dns-nameservers option goes in the first stanza, whatever its method.
    dns = ["    dns-nameservers " + " ".join(s.dns)] if s.dns else []
    static_v6 = bool(s.v6) and not config.dhcp
    # IPv6 first: ifup handles the stanzas in file order, and the inet6 methods set
    # accept_ra before they set the link up; once an inet stanza had set it up, the
    # kernel's router solicitation would have been answered under the old setting.
    if ipv6_auto and not static_v6:
        lines.append(f"iface {logical} inet6 auto")
        lines += dns
        dns = []
    if config.dhcp:
        lines.append(f"iface {logical} inet dhcp")
        lines += dns
        return "\n".join(lines) + "\n"
    # One stanza per address (ifupdown brings up every stanza of the interface, and
    # takes each down again): no "up" command lines, which ifup would run in a shell.
    for family, addresses, gateways in (("inet6", s.v6, s.gw6), ("inet", s.v4, s.gw4)):
        for i, address in enumerate(addresses):
            lines += [f"iface {logical} {family} static", f"    address {address}"]
            if i == 0 and gateways:
                lines.append(f"    gateway {gateways[0]}")
            if family == "inet6":
                # Static IPv6 means these addresses only (as networkd's IPv6AcceptRA=no):
                # ifup sets autoconf 0 by itself, but leaves router advertisements on.
                lines.append("    accept_ra 0")
            lines += dns
            dns = []
    return "\n".join(lines) + "\n"


RENDERERS = {
    "networkmanager": render_nmconnection,
    "networkd": render_networkd,
    "netplan": render_netplan,
    "ifupdown": render_ifupdown,
}
