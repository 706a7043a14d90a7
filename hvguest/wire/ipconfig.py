"""The host's SET_IP_INFO strings as typed values, by one strict grammar (no I/O).

The host sends ``adapter_id``, ``ip_addr``, ``sub_net``, ``gate_way`` and ``dns_addr`` as
text (protocol.md §2.7). Every address ends up in a configuration file that a network
stack reads and, for ifupdown, partly runs through a shell, so nothing of the host's text
is ever copied into a file: each item is parsed into an ``ipaddress`` value and written
back from that value (``.compressed``, lower-case hex, dots, colons and one slash).

Python's ``ipaddress`` accepts an IPv6 zone id (``fe80::1%<anything but % and />``),
newlines and shell syntax included, and puts it back into ``str()`` and ``.compressed``.
A static configuration never needs a zone (the interface is implied), so the grammar
refuses ``%`` outright, and with it every character outside the address alphabet,
before ``ipaddress`` sees the text. ``IpConfig`` refuses zoned values too, so a value
built by other code cannot carry one into a renderer either.

A refusal is a ``HostValueError`` whose message names the field and shows the offending
value escaped (ASCII only, cut to a bounded length), ready for a log line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from hvguest.wire.kvp import KvpSetIpInfo
from hvguest.wire.kvp_layout import IP_ADAPTER_ID, IP_ADDR, IP_DNS_ADDR, IP_GATE_WAY, IP_SUB_NET

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# The kernel hands the daemon at most this many bytes of each field (NUL included).
FIELD_LIMITS: Final = {
    f.name: f.kernel_limit for f in (IP_ADAPTER_ID, IP_ADDR, IP_SUB_NET, IP_GATE_WAY, IP_DNS_ADDR)
}
# Far more than any adapter has; bounds the work and the size of what is written.
MAX_ITEMS: Final = 32
# The longest textual address: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
MAX_ITEM_CHARS: Final = 45
# How much of a refused value a log line shows.
SHOWN_CHARS: Final = 64

_HEX = "0123456789abcdefABCDEF"
ADDRESS_LIST_CHARS: Final = frozenset(_HEX + ":.; ")
SUBNET_LIST_CHARS: Final = ADDRESS_LIST_CHARS | {"/"}
# Everything a typed value may render to.
RENDERED_CHARS: Final = frozenset("0123456789abcdefABCDEF:./")

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HOST_GUID = re.compile(r"(\{)?([0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})(?(1)\})")
_PREFIX = re.compile(r"/?([0-9]{1,3})")


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` for a log line: quoted and escaped like ``ascii()`` (control characters,
    line separators, lone surrogates and all non-ASCII as escapes), at most ``limit``
    characters of it, then its length."""
    if len(text) <= limit:
        return ascii(text)
    return f"{ascii(text[:limit])}... ({len(text)} characters)"


def escaped(text: str) -> str:
    """``text`` with every character that is not printable ASCII as an escape, unquoted."""
    return "".join(c if c.isascii() and c.isprintable() else ascii(c)[1:-1] for c in text)


class HostValueError(ValueError):
    """A host string the grammar refuses; ``str()`` is safe to log."""

    def __init__(self, field: str, value: str, reason: str) -> None:
        super().__init__(f"{field} {shown(value)}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


# -- the typed values --------------------------------------------------------------


def _zone(value: Address | Interface) -> str | None:
    return value.scope_id if isinstance(value, ipaddress.IPv6Address) else None


def text(value: Address | Interface) -> str:
    """The one way a typed value becomes text in a file: ``.compressed``, zone-free.

    ``IpConfig`` already refuses zones; checking the result again costs nothing and
    keeps this function safe on its own.
    """
    if not isinstance(value, Address | Interface):
        raise TypeError(f"an IPv4/IPv6 address or interface is needed, not {type(value).__name__}")
    if _zone(value) is not None:
        raise ValueError(f"{shown(str(value))} carries a zone id")
    out = value.compressed
    if not out or not RENDERED_CHARS.issuperset(out):
        raise ValueError(f"{shown(out)} is not a plain address")
    return out


@dataclass(frozen=True)
class IpConfig:
    """A validated SET_IP_INFO request: the only input the renderers take."""

    adapter_id: str  # VMBus device GUID, lower case, without braces
    dhcp: bool
    addresses: tuple[Interface, ...]  # address with its prefix, both families
    gateways: tuple[Address, ...]
    dns: tuple[Address, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.adapter_id, str) or not _GUID.fullmatch(self.adapter_id):
            raise ValueError(f"adapter_id {shown(str(self.adapter_id))} is not a lower-case GUID")
        if not isinstance(self.dhcp, bool):
            raise TypeError(f"dhcp must be bool, not {type(self.dhcp).__name__}")
        _check_items("addresses", self.addresses, _INTERFACE_TYPES)
        _check_items("gateways", self.gateways, _ADDRESS_TYPES)
        _check_items("dns", self.dns, _ADDRESS_TYPES)


_INTERFACE_TYPES: Final = (ipaddress.IPv4Interface, ipaddress.IPv6Interface)
_ADDRESS_TYPES: Final = (ipaddress.IPv4Address, ipaddress.IPv6Address)


def _check_items(name: str, items: object, kinds: tuple[type, ...]) -> None:
    if not isinstance(items, tuple):
        raise TypeError(f"{name} must be a tuple, not {type(items).__name__}")
    if len(items) > MAX_ITEMS:
        raise ValueError(f"{name} has {len(items)} items, limit {MAX_ITEMS}")
    for item in items:
        # Exactly these types: an interface is no gateway (IPv4Interface subclasses
        # IPv4Address), and another subclass could render itself differently.
        if type(item) not in kinds:
            raise TypeError(
                f"{name} items must be {' or '.join(k.__name__ for k in kinds)}"
                f", not {type(item).__name__}"
            )
        if _zone(item) is not None:
            raise ValueError(f"{name} item {shown(str(item))} carries a zone id")


_LINK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC = re.compile(r"[0-9A-F]{2}(?::[0-9A-F]{2}){5}")


@dataclass(frozen=True)
class LinkName:
    """A network interface name fit for file names and stanzas: a subset of the kernel's
    rule (no "/", no whitespace, at most 15 bytes) without shell or INI syntax."""

    value: str

    def __post_init__(self) -> None:
        if (
            not isinstance(self.value, str)
            or not _LINK_NAME.fullmatch(self.value)
            or self.value in (".", "..")
        ):
            raise ValueError(f"interface name {shown(str(self.value))} is not usable in a file")

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class MacAddress:
    """``00:15:5D:0A:0B:0C``: upper case, colon separated."""

    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, str) or not _MAC.fullmatch(self.value):
            raise ValueError(f"MAC address {shown(str(self.value))} is not XX:XX:XX:XX:XX:XX")

    @classmethod
    def parse(cls, text: str) -> MacAddress:
        """From sysfs' ``address`` (lower case, maybe a newline); ValueError otherwise."""
        return cls(text.strip().upper())

    @property
    def lower(self) -> str:
        return self.value.lower()

    def __str__(self) -> str:
        return self.value


# -- the grammar -------------------------------------------------------------------


def _items(field: str, value: str, alphabet: frozenset[str]) -> list[str]:
    """The ``;``-separated items of a field.

    hv_kvp_daemon's rule, strictly: spaces around an item are skipped and a trailing
    ``;`` is harmless, but an empty item followed by another (``a;;b``, which the C
    daemon cuts to ``a``) is refused instead of silently dropping what follows.
    """
    limit = FIELD_LIMITS[field] - 1
    if len(value) > limit:
        raise HostValueError(field, value, f"{len(value)} characters, limit {limit}")
    for pos, char in enumerate(value):
        if char not in alphabet:
            raise HostValueError(
                field, value, f"character {ascii(char)} at {pos} is not allowed in an address list"
            )
    items = [part.strip(" ") for part in value.split(";")]
    while items and not items[-1]:
        items.pop()
    if "" in items:
        raise HostValueError(field, value, "empty item inside the list")
    if len(items) > MAX_ITEMS:
        raise HostValueError(field, value, f"{len(items)} items, limit {MAX_ITEMS}")
    for item in items:
        if len(item) > MAX_ITEM_CHARS:
            raise HostValueError(field, item, f"item longer than {MAX_ITEM_CHARS} characters")
    return items


def parse_address(field: str, item: str) -> Address:
    """One address of ``field``; anything but hex digits, ``:`` and ``.`` is refused."""
    if not item or not ADDRESS_LIST_CHARS.issuperset(item) or set(item) & {";", " "}:
        raise HostValueError(field, item, "is not an IPv4 or IPv6 address")
    try:
        return ipaddress.ip_address(item)
    except ValueError:
        raise HostValueError(field, item, "is not an IPv4 or IPv6 address") from None


def parse_addresses(field: str, value: str) -> tuple[Address, ...]:
    return tuple(parse_address(field, item) for item in _items(field, value, ADDRESS_LIST_CHARS))


def parse_prefix(field: str, item: str, version: int) -> int:
    """A prefix length for an address of ``version``: ``24``, ``/64``, or a mask
    (``255.255.255.0``, ``ffff:ffff:ffff:ffff::``) whose ones are contiguous."""
    max_len = 32 if version == 4 else 128
    digits = _PREFIX.fullmatch(item)
    if digits:
        plen = int(digits.group(1))
        if plen > max_len:
            raise HostValueError(field, item, f"prefix {plen} is longer than {max_len}")
        return plen
    mask = parse_address(field, item)
    if mask.version != version:
        raise HostValueError(field, item, f"is not an IPv{version} mask")
    bits = int(mask)
    plen = bin(bits).count("1")
    if bits != ((1 << plen) - 1) << (max_len - plen):
        raise HostValueError(field, item, "is not a contiguous mask")
    return plen


def _interface(ip: Address, plen: int) -> Interface:
    if isinstance(ip, ipaddress.IPv4Address):
        return ipaddress.IPv4Interface((int(ip), plen))
    return ipaddress.IPv6Interface((int(ip), plen))


def parse_adapter_id(value: str) -> str:
    """``{xxxxxxxx-...}`` or without braces, any case -> lower case without braces."""
    match = _HOST_GUID.fullmatch(value)
    if not match:
        raise HostValueError("adapter_id", value, "is not a GUID")
    return match.group(2).lower()


def parse_ip_config(request: KvpSetIpInfo) -> IpConfig:
    """The request's fields as an ``IpConfig``; HostValueError names the first bad one.

    Every field is checked, also those DHCP makes unused: a malformed request is
    refused as a whole rather than partly applied.
    """
    guid = parse_adapter_id(request.adapter_id)
    ips = parse_addresses("ip_addr", request.ip_addr)
    subnets = _items("sub_net", request.sub_net, SUBNET_LIST_CHARS)
    if len(subnets) < len(ips) and not request.dhcp_enabled:
        raise HostValueError(
            "sub_net", request.sub_net, f"{len(subnets)} subnets for {len(ips)} addresses"
        )
    addresses: list[Interface] = []
    for i, subnet in enumerate(subnets):
        if i < len(ips):
            ip = ips[i]
            addresses.append(_interface(ip, parse_prefix("sub_net", subnet, ip.version)))
        else:  # more subnets than addresses: unused, but still well-formed
            parse_prefix("sub_net", subnet, 4 if "." in subnet else 6)
    gateways = parse_addresses("gate_way", request.gate_way)
    dns = parse_addresses("dns_addr", request.dns_addr)
    return IpConfig(
        guid,
        request.dhcp_enabled,
        () if request.dhcp_enabled else tuple(addresses),
        gateways,
        dns,
    )
