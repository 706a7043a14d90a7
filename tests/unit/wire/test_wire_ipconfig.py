"""The SET_IP_INFO grammar (hvguest.wire.ipconfig): what it accepts, what it refuses,
how it renders and how it shows a refused value."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hvguest.wire.ipconfig import (
    FIELD_LIMITS,
    MAX_ITEMS,
    HostValueError,
    IpConfig,
    LinkName,
    MacAddress,
    escaped,
    parse_adapter_id,
    parse_addresses,
    parse_ip_config,
    parse_prefix,
    shown,
    text,
)
from hvguest.wire.kvp import KvpSetIpInfo

GUID = "a3c5e2f0-1111-2222-3333-444455556666"
RENDERED = re.compile(r"[0-9a-fA-F:./]+")
PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def request(**kw: object) -> KvpSetIpInfo:
    base: dict[str, object] = dict(
        pool=0,
        adapter_id="{" + GUID + "}",
        addr_family=3,
        dhcp_enabled=False,
        ip_addr="192.0.2.20",
        sub_net="24",
        gate_way="192.0.2.1",
        dns_addr="192.0.2.53",
    )
    base.update(kw)
    return KvpSetIpInfo(**base)  # type: ignore[arg-type]


def rendered(config: IpConfig) -> list[str]:
    return [text(v) for v in (*config.addresses, *config.gateways, *config.dns)]


# -- accepted forms ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("", []),
        ("192.0.2.1", ["192.0.2.1"]),
        ("192.0.2.1;", ["192.0.2.1"]),
        (" 192.0.2.1 ; 2001:DB8:0::1 ;", ["192.0.2.1", "2001:db8::1"]),
        ("fe80::1", ["fe80::1"]),
        ("::ffff:192.0.2.1", [ipaddress.IPv6Address("::ffff:192.0.2.1").compressed]),
        (";", []),
    ],
)
def test_address_lists(value, want):
    assert [text(a) for a in parse_addresses("dns_addr", value)] == want


@pytest.mark.parametrize(
    ("item", "version", "plen"),
    [
        ("24", 4, 24),
        ("/24", 4, 24),
        ("255.255.255.0", 4, 24),
        ("255.255.255.255", 4, 32),
        ("0.0.0.0", 4, 0),
        ("64", 6, 64),
        ("/128", 6, 128),
        ("ffff:ffff:ffff:ffff::", 6, 64),
        ("::", 6, 0),
    ],
)
def test_prefixes(item, version, plen):
    assert parse_prefix("sub_net", item, version) == plen


@pytest.mark.parametrize(
    ("item", "version", "reason"),
    [
        ("33", 4, "longer than 32"),
        ("129", 6, "longer than 128"),
        ("255.0.255.0", 4, "contiguous"),
        ("ffff::ffff", 6, "contiguous"),
        ("255.255.255.0", 6, "not an IPv6 mask"),
        ("ffff::", 4, "not an IPv4 mask"),
        ("//24", 4, "not an IPv4 or IPv6 address"),
        ("2 4", 4, "not an IPv4 or IPv6 address"),
        ("\uff16\uff14", 6, "not an IPv4 or IPv6 address"),  # fullwidth "64": isdigit() is True
    ],
)
def test_bad_prefixes(item, version, reason):
    with pytest.raises(HostValueError, match=reason):
        parse_prefix("sub_net", item, version)


@pytest.mark.parametrize(
    ("value", "guid"),
    [
        ("{" + GUID.upper() + "}", GUID),
        (GUID, GUID),
    ],
)
def test_adapter_ids(value, guid):
    assert parse_adapter_id(value) == guid


@pytest.mark.parametrize(
    "value",
    ["", "{" + GUID, GUID + "}", "{" + GUID + "}\n", " " + GUID, GUID.replace("-", ""),
     "urn:uuid:" + GUID, "{" + GUID + "}%x"],
)
def test_bad_adapter_ids(value):
    with pytest.raises(HostValueError, match="adapter_id .* is not a GUID"):
        parse_adapter_id(value)


def test_request_becomes_typed_values():
    cfg = parse_ip_config(
        request(ip_addr="192.0.2.20;2001:db8::20", sub_net="255.255.255.0;/64",
                gate_way="192.0.2.1;fe80::1;", dns_addr="192.0.2.53; 2001:db8::53;")
    )
    assert cfg.adapter_id == GUID and not cfg.dhcp
    assert cfg.addresses == (
        ipaddress.IPv4Interface("192.0.2.20/24"),
        ipaddress.IPv6Interface("2001:db8::20/64"),
    )
    assert rendered(cfg) == [
        "192.0.2.20/24", "2001:db8::20/64", "192.0.2.1", "fe80::1", "192.0.2.53", "2001:db8::53"
    ]


# -- refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "field", "reason"),
    [
        ({"dns_addr": "fe80::53%eth0"}, "dns_addr", "character '%' at 8"),
        ({"gate_way": "fe80::1%y\n[Match]"}, "gate_way", "character '%'"),
        ({"ip_addr": "192.0.2.20\n"}, "ip_addr", "character '\\\\n' at 10"),
        ({"dns_addr": "192.0.2.53;;192.0.2.54"}, "dns_addr", "empty item inside the list"),
        ({"dns_addr": "192.0.2.53 192.0.2.54"}, "dns_addr", "not an IPv4 or IPv6 address"),
        ({"sub_net": ""}, "sub_net", "0 subnets for 1 addresses"),
        ({"sub_net": "24;x"}, "sub_net", "character 'x'"),
        ({"sub_net": "24;255.0.255.0"}, "sub_net", "contiguous"),  # unused, still checked
        ({"dns_addr": "1" * 4096}, "dns_addr", "4096 characters, limit 1023"),
        ({"gate_way": "1" * 600}, "gate_way", "600 characters, limit 511"),
        ({"dns_addr": ";".join(["192.0.2.53"] * (MAX_ITEMS + 1))}, "dns_addr", "33 items"),
        ({"dns_addr": "1" * 46}, "dns_addr", "longer than 45"),
        ({"dns_addr": "192.0.2.53\ud800"}, "dns_addr", "character '\\\\ud800'"),
        ({"dns_addr": "192.0.2.53\u2028"}, "dns_addr", "character '\\\\u2028'"),
        ({"dns_addr": "192.0.2.53\x85"}, "dns_addr", "character '\\\\x85'"),
        ({"dns_addr": "192.0.2.53\0"}, "dns_addr", "character '\\\\x00'"),
        ({"dhcp_enabled": True, "ip_addr": "$(reboot)"}, "ip_addr", "character '\\$'"),
    ],
)
def test_refused(kw, field, reason):
    with pytest.raises(HostValueError, match=reason) as info:
        parse_ip_config(request(**kw))
    assert info.value.field == field
    assert str(info.value).startswith(field + " '")


def test_field_limits_are_the_kernels():
    assert FIELD_LIMITS == {
        "adapter_id": 128, "ip_addr": 1024, "sub_net": 1024, "gate_way": 512, "dns_addr": 1024
    }


def test_refusal_message_is_escaped_and_bounded():
    value = "fe80::53%x\n    pre-up reboot\x1b[2J" + "A" * 5000
    with pytest.raises(HostValueError) as info:
        parse_ip_config(request(dns_addr=value))
    message = str(info.value)
    assert message.isascii() and message.isprintable()
    assert "'fe80::53%x\\n    pre-up reboot\\x1b[2JAAA" in message
    assert "(5032 characters)" in message and len(message) < 200


# -- the typed values --------------------------------------------------------------

V4 = ipaddress.IPv4Address("192.0.2.1")


class Sneaky(ipaddress.IPv4Address):
    def __str__(self) -> str:
        return "192.0.2.1\n    pre-up reboot"


@pytest.mark.parametrize(
    ("kw", "error", "reason"),
    [
        ({"addresses": ("192.0.2.20/24",)}, TypeError, "IPv4Interface or IPv6Interface, not str"),
        ({"addresses": (V4,)}, TypeError, "not IPv4Address"),
        ({"gateways": ("192.0.2.1",)}, TypeError, "not str"),
        ({"gateways": (ipaddress.IPv4Interface("192.0.2.1/24"),)}, TypeError, "IPv4Interface"),
        ({"dns": (Sneaky("192.0.2.1"),)}, TypeError, "not Sneaky"),
        ({"dns": [V4]}, TypeError, "must be a tuple"),
        ({"dns": (ipaddress.IPv6Address("fe80::1%eth0"),)}, ValueError, "zone id"),
        ({"addresses": (ipaddress.IPv6Interface("fe80::1%x/64"),)}, ValueError, "zone id"),
        ({"dns": (V4,) * (MAX_ITEMS + 1)}, ValueError, "limit 32"),
        ({"adapter_id": "{" + GUID + "}"}, ValueError, "lower-case GUID"),
        ({"adapter_id": GUID.upper()}, ValueError, "lower-case GUID"),
        ({"dhcp": 1}, TypeError, "dhcp must be bool"),
    ],
)
def test_ipconfig_takes_only_typed_zone_free_values(kw, error, reason):
    fields: dict[str, object] = dict(adapter_id=GUID, dhcp=False, addresses=(), gateways=(), dns=())
    fields.update(kw)
    with pytest.raises(error, match=reason):
        IpConfig(**fields)  # type: ignore[arg-type]


def test_text_refuses_what_it_cannot_render_plainly():
    assert text(ipaddress.IPv6Interface("2001:DB8::1/64")) == "2001:db8::1/64"
    with pytest.raises(ValueError, match="zone id"):
        text(ipaddress.IPv6Address("fe80::1%x\npre-up reboot"))
    with pytest.raises(TypeError):
        text("192.0.2.1")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["eth0", "enP1234s1", "eth0.100", "br-lan_1", "a" * 15])
def test_link_names(name):
    assert str(LinkName(name)) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 16, "eth0\n", "a/b", "e;x", "$(x)", "é"])
def test_bad_link_names(name):
    with pytest.raises(ValueError, match="interface name"):
        LinkName(name)


def test_mac_addresses():
    mac = MacAddress.parse("00:15:5d:0a:0b:0c\n")
    assert str(mac) == "00:15:5D:0A:0B:0C" and mac.lower == "00:15:5d:0a:0b:0c"
    for bad in ("00:15:5d:0a:0b", "00-15-5d-0a-0b-0c", "00:15:5d:0a:0b:0c\nX", "zz:15:5d:0a:0b:0c"):
        with pytest.raises(ValueError, match="MAC address"):
            MacAddress.parse(bad)


# -- properties ----------------------------------------------------------------------

# Characters that make up addresses, lists and attacks on them.
ATTACK_CHARS = st.sampled_from(
    list("0123456789abcdefABCDEF:./; %\n\r\t\0\"'`$()|&<>\\[]=#-")
    + ["\u2028", "\u2029", "\x85", "\x1b", "\x7f", "\ud800", "\udfff", "\uff11", "\u0661", "é"]
)
ATTACK_TEXT = st.text(ATTACK_CHARS, max_size=80)
V4_TEXT = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
V6_TEXT = st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n)).flatmap(
    lambda a: st.sampled_from([a.compressed, a.exploded, a.exploded.upper(), a.compressed.upper()])
)
ADDRESS_TEXT = st.one_of(V4_TEXT, V6_TEXT)


def address_list(items: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(items, max_size=4).map(";".join)


FIELD_TEXT = st.one_of(
    ATTACK_TEXT,
    address_list(ADDRESS_TEXT),
    st.tuples(address_list(ADDRESS_TEXT), ATTACK_TEXT).map("".join),
    st.tuples(ADDRESS_TEXT, ATTACK_TEXT, ADDRESS_TEXT).map("".join),
)
SUBNET_TEXT = st.one_of(
    FIELD_TEXT, address_list(st.integers(0, 130).map(str)), address_list(ADDRESS_TEXT)
)


@PROPS
@given(
    ip_addr=FIELD_TEXT,
    sub_net=SUBNET_TEXT,
    gate_way=FIELD_TEXT,
    dns_addr=FIELD_TEXT,
    dhcp=st.booleans(),
)
@example(ip_addr="fe80::20%x\n pre-up reboot", sub_net="64", gate_way="", dns_addr="", dhcp=False)
@example(ip_addr="", sub_net="", gate_way="fe80::1%y\n[Match]", dns_addr="", dhcp=False)
def test_whatever_is_accepted_renders_as_plain_address_characters(
    ip_addr, sub_net, gate_way, dns_addr, dhcp
):
    try:
        cfg = parse_ip_config(
            request(ip_addr=ip_addr, sub_net=sub_net, gate_way=gate_way, dns_addr=dns_addr,
                    dhcp_enabled=dhcp)
        )
    except HostValueError as exc:
        message = str(exc)
        assert message.isascii() and message.isprintable() and len(message) < 300
        return
    for out in rendered(cfg):
        assert RENDERED.fullmatch(out), out


@PROPS
@given(st.lists(ADDRESS_TEXT, min_size=1, max_size=MAX_ITEMS), st.sampled_from([";", "; ", " ;"]))
def test_valid_lists_parse_to_the_same_addresses(items, separator):
    got = parse_addresses("dns_addr", separator.join(items))
    assert got == tuple(ipaddress.ip_address(i) for i in items)


@PROPS
@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_dotted_masks_and_lengths_agree(ip, plen):
    mask = str(ipaddress.IPv4Network(f"0.0.0.0/{plen}").netmask)
    assert parse_prefix("sub_net", mask, 4) == parse_prefix("sub_net", str(plen), 4) == plen
    cfg = parse_ip_config(request(ip_addr=str(ipaddress.IPv4Address(ip)), sub_net=mask))
    assert cfg.addresses == (ipaddress.IPv4Interface((ip, plen)),)


@PROPS
@given(st.text(max_size=300))
def test_shown_and_escaped_are_printable_ascii_and_bounded(value):
    for out in (shown(value), escaped(value)):
        assert out.isascii() and out.isprintable()
    assert len(shown(value)) <= 64 * 10 + 2 + 30
