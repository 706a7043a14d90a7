"""rtnetlink payload parsing (crafted messages) and the "kvp" config section."""

from __future__ import annotations

import socket
import struct

import pytest

from hvguest.config import load_config_text
from hvguest.errors import ConfigError
from hvguest.kvp import netlink
from hvguest.kvp.settings import KvpSettings, nic_excluded, nic_rank


def rtattr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


class Crafted(netlink.NetlinkReader):
    def __init__(self, replies):
        super().__init__()
        self.replies = replies

    def _dump(self, msg_type, body):
        return self.replies[msg_type]


def test_links_addresses_routes():
    link = (
        struct.pack("=BxHiII", 0, 1, 2, 0x1043, 0)
        + rtattr(3, b"eth0\0")
        + rtattr(1, bytes.fromhex("00155d000001"))
    )
    v4 = (
        struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 2)
        + rtattr(1, socket.inet_aton("192.0.2.99"))
        + rtattr(2, socket.inet_aton("192.0.2.10"))
        + rtattr(6, struct.pack("=IIII", 100, 200, 0, 0))
    )
    v6 = struct.pack("=BBBBI", socket.AF_INET6, 64, 0, 0, 2) + rtattr(
        1, socket.inet_pton(socket.AF_INET6, "2001:db8::10")
    )
    route = (
        struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
        + rtattr(5, socket.inet_aton("192.0.2.1"))
        + rtattr(4, struct.pack("=i", 2))
    )
    not_default = struct.pack("=BBBBBBBBI", socket.AF_INET, 24, 0, 0, 254, 2, 253, 1, 0)
    reader = Crafted(
        {
            netlink.RTM_GETLINK: [(netlink.RTM_NEWLINK, link)],
            netlink.RTM_GETADDR: [(netlink.RTM_NEWADDR, v4), (netlink.RTM_NEWADDR, v6)],
            netlink.RTM_GETROUTE: [
                (netlink.RTM_NEWROUTE, route),
                (netlink.RTM_NEWROUTE, not_default),
            ],
        }
    )
    snap = reader.snapshot()
    assert snap.links == [netlink.Link(2, "eth0", 0x1043, "00:15:5D:00:00:01")]
    v4addr, v6addr = snap.addresses
    assert (v4addr.address, v4addr.netmask, v4addr.dynamic) == ("192.0.2.10", "255.255.255.0", True)
    assert (v6addr.address, v6addr.netmask, v6addr.dynamic) == ("2001:db8::10", "/64", False)
    # the dump is per family: the v4 route once for each family request
    assert netlink.Route(socket.AF_INET, "192.0.2.1", 2) in snap.default_routes


def test_multipath_nexthops():
    gw = socket.inet_aton("10.0.0.1")
    hop = struct.pack("=HBBi", 8 + 8, 0, 0, 5) + rtattr(5, gw)
    assert (
        netlink._nexthops(socket.AF_INET, hop + hop)
        == [netlink.Route(socket.AF_INET, "10.0.0.1", 5)] * 2
    )


def test_settings_defaults_and_filters():
    settings = load_config_text("").section("kvp")
    assert isinstance(settings, KvpSettings)
    for name in ("lo", "veth1234", "docker0", "virbr0", "cali9", "flannel.1", "cni0"):
        assert nic_excluded(settings, name)
    assert not nic_excluded(settings, "eth0")
    assert settings.unsafe_sizes is False
    custom = load_config_text("kvp:\n  primary_nics: [eth1, 'eth*']\n").section("kvp")
    assert [nic_rank(custom, n) for n in ("eth1", "eth0", "ens3")] == [0, 1, 2]


@pytest.mark.parametrize(
    "text",
    [
        "kvp:\n  exclude_nics: ['']\n",
        "kvp:\n  apply_timeout: 40\n",
        "kvp:\n  network_stack: wicked\n",
        "kvp:\n  no_such_key: 1\n",
    ],
)
def test_settings_errors_name_the_line(text):
    with pytest.raises(ConfigError, match=r":2"):
        load_config_text(text, "hvguest.yaml")
