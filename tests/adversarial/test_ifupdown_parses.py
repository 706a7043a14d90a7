"""The ifupdown stanzas hvguest-kvpd writes, read by ifupdown's own parser (``ifquery``):
exactly the options intended, no other, in every stanza."""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from random_requests import random_request

from hvguest.kvp.netrender import IFUPDOWN_MAPPING_SCRIPT, render_ifupdown
from hvguest.wire.ipconfig import IpConfig, LinkName, parse_ip_config

# scripts/setup unpacks ifupdown under .cache rather than installing it on this machine.
_UNPACKED = Path(__file__).resolve().parents[2] / ".cache" / "ifupdown" / "sbin" / "ifquery"
IFQUERY = shutil.which("ifquery") or (str(_UNPACKED) if _UNPACKED.exists() else None)
pytestmark = pytest.mark.skipif(
    IFQUERY is None and not os.environ.get("CI"),
    reason="needs ifupdown's ifquery (scripts/setup unpacks it under .cache)"
)

# The packaged mapping script, run by ifquery from the checkout.
MAPPING = Path(__file__).resolve().parents[2] / "hooks" / "ifupdown-mapping"

# Options ifupdown derives itself for the static methods; everything else must be ours.
DERIVED = {"broadcast", "autoconf", "preferred-lifetime", "dad-attempts", "dad-interval",
           "request_prefix", "ll-attempts", "ll-interval"}


def ifquery(tmp_path, text: str, name: str) -> list[tuple[str, str]]:
    path = tmp_path / "interfaces"
    path.write_text(text.replace(IFUPDOWN_MAPPING_SCRIPT, str(MAPPING)))
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    out = subprocess.run(
        [IFQUERY, "--interfaces", str(path), "--state-dir", str(state), name],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout
    options = []
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        assert sep, f"ifquery printed {line!r}"
        if key not in DERIVED:
            options.append((key, value.strip()))
    return options


def intended(config: IpConfig) -> list[tuple[str, str]]:
    """The options the host's settings call for, in stanza order."""
    dns = [("dns-nameservers", " ".join(d.compressed for d in config.dns))] if config.dns else []
    if config.dhcp:
        return dns
    out: list[tuple[str, str]] = []
    for version in (6, 4):  # IPv6 stanzas first (hvguest.kvp.netrender says why)
        addresses = [a for a in config.addresses if a.version == version]
        gateways = [g for g in config.gateways if g.version == version]
        for i, a in enumerate(addresses):
            out.append(("address", a.ip.compressed))
            if i == 0 and gateways:
                out.append(("gateway", gateways[0].compressed))
            if version == 6:
                out.append(("accept_ra", "0"))  # static IPv6: no router advertisements
            out += dns
            dns = []
            mask = str(a.netmask) if version == 4 else str(a.network.prefixlen)
            out.append(("netmask", mask))
    return out


def test_ifquery_shows_an_injected_option(tmp_path):
    text = "auto eth0\niface eth0 inet static\n    address 192.0.2.20/24\n    pre-up touch pwned\n"
    options = ifquery(tmp_path, text, "eth0")
    assert ("pre-up", "touch pwned") in options
    assert options != [("address", "192.0.2.20"), ("netmask", "255.255.255.0")]


def test_rendered_stanzas_are_exactly_the_intended_options(tmp_path):
    rng = random.Random(20261203)
    checked = 0
    for i in range(200):
        config = parse_ip_config(random_request(rng))
        if not config.dhcp and not config.addresses:
            continue  # no stanza at all: nothing for ifupdown to parse
        name = f"eth{i}"
        text = render_ifupdown(config, LinkName(name), None)
        assert ifquery(tmp_path, text, name) == intended(config), text
        checked += 1
    assert checked > 150


def test_ipv4_mask_forms_agree(tmp_path):
    config = IpConfig(
        "a3c5e2f0-1111-2222-3333-444455556666", False,
        (ipaddress.IPv4Interface("192.0.2.20/23"),), (ipaddress.IPv4Address("192.0.2.1"),), (),
    )
    assert ifquery(tmp_path, render_ifupdown(config, LinkName("eth0"), None), "eth0") == [
        ("address", "192.0.2.20"), ("gateway", "192.0.2.1"), ("netmask", "255.255.254.0")
    ]


@pytest.mark.parametrize("dhcp", [True, False])
def test_without_static_ipv6_an_inet6_auto_stanza_comes_first(tmp_path, dhcp):
    # IPv6 enabled on the interface, no static IPv6 from the host: router
    # advertisements back on (accept_ra 2 is ifupdown's inet6 auto default) before
    # anything sets the link up, then the IPv4 stanza.
    config = IpConfig(
        "a3c5e2f0-1111-2222-3333-444455556666", dhcp,
        () if dhcp else (ipaddress.IPv4Interface("192.0.2.20/24"),),
        () if dhcp else (ipaddress.IPv4Address("192.0.2.1"),),
        (ipaddress.IPv4Address("192.0.2.53"),),
    )
    text = render_ifupdown(config, LinkName("eth0"), None, ipv6_auto=True)
    static = [] if dhcp else [("address", "192.0.2.20"), ("gateway", "192.0.2.1"),
                              ("netmask", "255.255.255.0")]
    assert ifquery(tmp_path, text, "eth0") == [
        ("dns-nameservers", "192.0.2.53"), ("accept_ra", "2"), *static
    ]


@pytest.mark.parametrize("name", ["", ".", "..", "eth0;touch pwned", "eth0 x", "$(id)",
                                  "a" * 16, "eth0\nhvguest-x", "eth/0"])
def test_mapping_script_maps_no_name_outside_the_interface_name_rule(name):
    # ifup runs it as root with the interface name; a name that could not be hvguest's
    # (LinkName's rule) maps to nothing rather than to a crafted logical interface.
    done = subprocess.run(["sh", str(MAPPING), name], capture_output=True, text=True,
                          timeout=10, check=False)
    assert (done.returncode, done.stdout) == (1, "")


def test_mapping_script_maps_an_interface_to_its_logical_name():
    done = subprocess.run(["sh", str(MAPPING), "eth0"], capture_output=True, text=True,
                          timeout=10, check=True)
    assert done.stdout == "hvguest-eth0\n"
