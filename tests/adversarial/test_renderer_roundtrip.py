"""Any configuration the grammar can produce, rendered for each stack, reads back with
the stack's parser (stack_parsers) as exactly that configuration."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from stack_parsers import READERS

from hvguest.kvp.netrender import RENDERERS
from hvguest.wire.ipconfig import IpConfig, LinkName, MacAddress

GUID = "a3c5e2f0-1111-2222-3333-444455556666"

V4 = st.builds(lambda n, p: ipaddress.IPv4Interface((n, p)), st.integers(0, 2**32 - 1),
               st.integers(0, 32))
V6 = st.builds(lambda n, p: ipaddress.IPv6Interface((n, p)), st.integers(0, 2**128 - 1),
               st.integers(0, 128))
ADDR4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ADDR6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
NAMES = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}", fullmatch=True).map(LinkName)
MACS = st.none() | st.integers(0, 2**48 - 1).map(
    lambda n: MacAddress(":".join(f"{n:012X}"[i : i + 2] for i in range(0, 12, 2)))
)


@st.composite
def configs(draw):
    v4 = draw(st.lists(V4, max_size=4))
    v6 = draw(st.lists(V6, max_size=4))
    # One gateway per family with addresses of that family: what every renderer carries.
    gateways = []
    if v4 and draw(st.booleans()):
        gateways.append(draw(ADDR4))
    if v6 and draw(st.booleans()):
        gateways.append(draw(ADDR6))
    dns = draw(st.lists(ADDR4 | ADDR6, max_size=4))
    dhcp = draw(st.booleans())
    return IpConfig(GUID, dhcp, tuple(v4 + v6), tuple(gateways), tuple(dns))


def by_family(items):
    return sorted(items, key=lambda t: ":" in t)


@pytest.mark.parametrize("stack", sorted(RENDERERS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), name=NAMES, mac=MACS)
def test_rendered_file_reads_back_as_the_configuration(stack, config, name, mac):
    if stack == "ifupdown":
        # a static stanza needs an address to exist at all
        assume(config.dhcp or config.addresses)
    text = RENDERERS[stack](config, name, mac)
    assert text.isascii()
    got = READERS[stack](text, str(name))
    assert got.name == str(name)
    if stack != "ifupdown":
        assert got.mac.upper() == ("" if mac is None else str(mac))
    assert got.dhcp == config.dhcp
    static = not config.dhcp
    assert by_family(got.addresses) == by_family(
        [a.compressed for a in config.addresses] if static else []
    )
    assert by_family(got.gateways) == by_family(
        [g.compressed for g in config.gateways] if static else []
    )
    assert by_family(got.dns) == by_family([d.compressed for d in config.dns])
