"""Read back what hvguest-kvpd wrote for each network stack, strictly.

Each reader parses the file with the stack's real parser where one is available here
(configparser for NetworkManager keyfiles, yaml.safe_load for netplan) or with a strict
line grammar (systemd .network INI, ifupdown stanza), refuses anything it does not
expect, and returns the settings the stack would apply. The tests compare those with
the settings the host asked for.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass, field

import yaml


class Unexpected(AssertionError):
    """The file holds something no hvguest renderer should write."""


@dataclass
class Settings:
    """What a stack would configure on the interface, in the renderers' text forms."""

    name: str = ""
    mac: str = ""
    dhcp: bool = False
    addresses: list[str] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)


# One address, network or interface in the only form the renderers may write.
VALUE = r"[0-9a-f:./]+"
NAME = r"[A-Za-z0-9_.-]+"


def _value(text: str, what: str) -> str:
    if not re.fullmatch(VALUE, text):
        raise Unexpected(f"{what} {text!r} is not a plain address")
    return text


def read_nmconnection(text: str) -> Settings:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    allowed = {
        "connection": {"id", "type", "interface-name", "autoconnect"},
        "ethernet": {"mac-address"},
        "ipv4": {"method", "gateway", "dns"} | {f"address{i}" for i in range(1, 65)},
        "ipv6": {"method", "gateway", "dns"} | {f"address{i}" for i in range(1, 65)},
    }
    if set(parser.sections()) != set(allowed):
        raise Unexpected(f"keyfile sections {parser.sections()}")
    out = Settings()
    for section in parser.sections():
        extra = set(parser[section]) - allowed[section]
        if extra:
            raise Unexpected(f"keyfile [{section}] has unexpected keys {sorted(extra)}")
    conn = parser["connection"]
    if conn.get("type") != "ethernet" or conn.get("autoconnect") != "true":
        raise Unexpected(f"keyfile [connection] {dict(conn)}")
    out.name = conn["interface-name"]
    if not re.fullmatch(NAME, out.name) or conn["id"] != f"hvguest-{out.name}":
        raise Unexpected(f"keyfile names {dict(conn)}")
    out.mac = parser["ethernet"].get("mac-address", "")
    v4, v6 = parser["ipv4"], parser["ipv6"]
    out.dhcp = v4["method"] == "auto"
    if v4["method"] not in ("auto", "manual", "disabled") or v6["method"] not in (
        "auto",
        "manual",
    ):
        raise Unexpected(f"keyfile methods {v4['method']!r}/{v6['method']!r}")
    for section in (v4, v6):
        i = 1
        while f"address{i}" in section:
            out.addresses.append(_value(section[f"address{i}"], "keyfile address"))
            i += 1
        if len([k for k in section if k.startswith("address")]) != i - 1:
            raise Unexpected("keyfile addresses are not numbered 1..n")
        if "gateway" in section:
            out.gateways.append(_value(section["gateway"], "keyfile gateway"))
        if "dns" in section:
            dns = section["dns"]
            if not dns.endswith(";"):
                raise Unexpected(f"keyfile dns {dns!r}")
            out.dns += [_value(d, "keyfile dns") for d in dns[:-1].split(";")]
    return out


def read_networkd(text: str) -> Settings:
    """systemd's INI dialect, strictly: comments, [Section] headers and Key=Value lines."""
    out = Settings()
    section = None
    allowed = {"Match": {"Name", "MACAddress"}, "Network": {"DHCP", "Address", "Gateway", "DNS",
                                                      "IPv6AcceptRA"}}
    seen: list[str] = []
    for line in text.split("\n"):
        if line == "" or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            section = header.group(1)
            if section not in allowed or section in seen:
                raise Unexpected(f".network section {line!r}")
            seen.append(section)
            continue
        pair = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)=(\S+)", line)
        if section is None or pair is None or pair.group(1) not in allowed[section]:
            raise Unexpected(f".network line {line!r} in [{section}]")
        key, value = pair.groups()
        if key == "Name":
            out.name = value
        elif key == "MACAddress":
            out.mac = value
        elif key == "DHCP":
            if value != "ipv4":
                raise Unexpected(f"DHCP={value}")
            out.dhcp = True
        elif key == "Address":
            out.addresses.append(_value(value, "Address"))
        elif key == "Gateway":
            out.gateways.append(_value(value, "Gateway"))
        elif key == "IPv6AcceptRA":
            if value != "no" or out.dhcp:
                raise Unexpected(f"IPv6AcceptRA={value}")
        else:
            out.dns.append(_value(value, "DNS"))
    if seen != ["Match", "Network"]:
        raise Unexpected(f".network sections {seen}")
    return out


def read_netplan(text: str) -> Settings:
    doc = yaml.safe_load(text)
    if set(doc) != {"network"} or set(doc["network"]) != {"version", "ethernets"}:
        raise Unexpected(f"netplan document {doc!r}")
    if doc["network"]["version"] != 2 or len(doc["network"]["ethernets"]) != 1:
        raise Unexpected(f"netplan network {doc['network']!r}")
    ((name, eth),) = doc["network"]["ethernets"].items()
    extra = set(eth) - {"match", "set-name", "dhcp4", "addresses", "routes", "nameservers",
                        "accept-ra"}
    if extra:
        raise Unexpected(f"netplan keys {sorted(extra)}")
    out = Settings(name=name, dhcp=eth["dhcp4"] is True)
    if eth.get("accept-ra", False) is not False:
        raise Unexpected(f"netplan accept-ra {eth['accept-ra']!r}")
    if "match" in eth:
        if set(eth["match"]) != {"macaddress"} or eth.get("set-name") != name:
            raise Unexpected(f"netplan match {eth['match']!r}")
        out.mac = eth["match"]["macaddress"]
    out.addresses = [_value(a, "netplan address") for a in eth.get("addresses", [])]
    for route in eth.get("routes", []):
        if set(route) != {"to", "via"} or route["to"] != "default":
            raise Unexpected(f"netplan route {route!r}")
        out.gateways.append(_value(route["via"], "netplan route via"))
    if "nameservers" in eth:
        if set(eth["nameservers"]) != {"addresses"}:
            raise Unexpected(f"netplan nameservers {eth['nameservers']!r}")
        out.dns = [_value(d, "netplan nameserver") for d in eth["nameservers"]["addresses"]]
    return out


def read_ifupdown(text: str, name: str) -> Settings:
    """Every line must be one the renderer writes for ``name``; no other line, no
    other option (ifup hands options to hook scripts and the shell)."""
    out = Settings(name=name)
    lines = text.split("\n")
    if lines[-1] != "":
        raise Unexpected("stanza does not end with a newline")
    family = None
    # The stanzas are the logical interface's, reached through the mapping.
    n = re.escape(f"hvguest-{name}")
    mapping = [f"mapping {name}", "    script /usr/lib/hvguest/ifupdown-mapping"]
    for line in lines[:-1]:
        if line.startswith("#") and line.isprintable():
            continue
        if line == f"auto {name}":
            continue
        if family is None and mapping and line == mapping[0]:
            mapping.pop(0)
            continue
        if line == f"iface hvguest-{name} inet6 auto":
            family = "inet6-auto"  # router advertisements and SLAAC: no options but DNS
            continue
        m = re.fullmatch(rf"iface {n} (inet6?) (static|dhcp)", line)
        if m:
            family = m.group(1)
            if m.group(2) == "dhcp":
                if family != "inet":
                    raise Unexpected(line)
                out.dhcp = True
            continue
        if family is None:
            raise Unexpected(f"stanza line {line!r} outside an iface block")
        m = re.fullmatch(rf"    (address|gateway) ({VALUE})", line)
        if m and family != "inet6-auto":
            (out.addresses if m.group(1) == "address" else out.gateways).append(m.group(2))
            continue
        if line == "    accept_ra 0" and family == "inet6":
            continue  # static IPv6: no router advertisements
        m = re.fullmatch(rf"    dns-nameservers ({VALUE}(?: {VALUE})*)", line)
        if m:
            out.dns += m.group(1).split(" ")
            continue
        raise Unexpected(f"stanza line {line!r}")
    if mapping:
        raise Unexpected(f"no mapping of {name} to hvguest-{name}")
    return out


READERS = {
    "networkmanager": lambda text, name: read_nmconnection(text),
    "networkd": lambda text, name: read_networkd(text),
    "netplan": lambda text, name: read_netplan(text),
    "ifupdown": read_ifupdown,
}
