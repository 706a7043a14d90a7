"""GET_IP_INFO answers from a fake netlink snapshot and injected state files."""

from __future__ import annotations

import socket

import pytest

from hvguest.kvp.ipinfo import IpInfoSource, join_limited
from hvguest.kvp.netlink import Address, Link, Route, Snapshot
from hvguest.paths import Paths

ETH0 = Link(2, "eth0", 0, "00:15:5D:00:00:01")
VF = Link(3, "enP1s1", 0, "00:15:5D:00:00:01")  # accelerated networking VF, same MAC
ETH10 = Link(4, "eth10", 0, "00:15:5D:00:00:10")


class FakeReader:
    def __init__(self, snap):
        self.snap = snap

    def snapshot(self):
        return self.snap


def snapshot(dynamic=False):
    lft = 3600 if dynamic else 0xFFFFFFFF
    flags = 0 if dynamic else 0x80
    return Snapshot(
        links=[Link(1, "lo", 0x8, "00:00:00:00:00:00"), VF, ETH0, ETH10],
        addresses=[
            Address(2, socket.AF_INET6, "2001:db8::10", 64, 0x80),
            Address(2, socket.AF_INET, "192.0.2.10", 24, flags, lft),
            Address(4, socket.AF_INET, "10.0.0.10", 8, 0x80),  # eth10: not eth0's
        ],
        default_routes=[
            Route(socket.AF_INET, "192.0.2.1", 2),
            Route(socket.AF_INET, "10.0.0.1", 4),
            Route(socket.AF_INET6, "2001:db8::1", 2),
        ],
    )


@pytest.fixture()
def roots(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "etc" / "resolv.conf").write_text(
        "# x\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"
    )
    return tmp_path


def source(roots, snap=None):
    return IpInfoSource(Paths(os_etc=str(roots / "etc")), FakeReader(snap or snapshot()))


def test_reference_formats_and_own_routes_only(roots):
    info = source(roots).ip_info("00:15:5D:00:00:01", 0)
    assert info.ip_addr == "192.0.2.10;2001:db8::10"  # IPv4 first, like getifaddrs
    assert info.sub_net == "255.255.255.0;/64"
    assert info.gate_way == "192.0.2.1;2001:db8::1;"  # eth10's gateway is not ours
    assert info.dns_addr == "192.0.2.53;2001:db8::53;"
    assert info.addr_family == 3
    assert info.dhcp_enabled is False


def test_unknown_mac_is_none(roots):
    assert source(roots).ip_info("00:15:5D:FF:FF:FF", 0) is None


def test_exact_interface_not_prefix(roots):
    info = source(roots).ip_info("00:15:5D:00:00:10", 0)
    assert info.ip_addr == "10.0.0.10"


def test_vf_without_addresses_is_skipped(roots):
    assert source(roots).ip_info("00:15:5D:00:00:01", 0).ip_addr.startswith("192.0.2.10")


def test_dhcp_from_lease_lifetime(roots):
    assert source(roots, snapshot(dynamic=True)).ip_info("00:15:5D:00:00:01", 0).dhcp_enabled


def test_dhcp_from_networkd(roots):
    links = roots / "run" / "systemd" / "netif" / "links"
    links.mkdir(parents=True)
    (roots / "etc" / "systemd" / "network").mkdir(parents=True)
    (roots / "etc" / "systemd" / "network" / "10-eth0.network").write_text("[Network]\nDHCP=yes\n")
    (links / "2").write_text(
        "ADMIN_STATE=configured\nNETWORK_FILE=/etc/systemd/network/10-eth0.network\nDNS=9.9.9.9\n"
    )
    info = source(roots).ip_info("00:15:5D:00:00:01", 0)
    assert info.dhcp_enabled is True
    assert info.dns_addr == "9.9.9.9;"  # per-link servers win over resolv.conf


def test_dhcp_from_networkmanager_keyfile(roots):
    (roots / "run" / "NetworkManager").mkdir()
    conns = roots / "etc" / "NetworkManager" / "system-connections"
    conns.mkdir(parents=True)
    (conns / "wired.nmconnection").write_text(
        "[connection]\ninterface-name=eth0\n[ipv4]\nmethod=auto\n"
    )
    assert source(roots).ip_info("00:15:5D:00:00:01", 0).dhcp_enabled is True
    (conns / "wired.nmconnection").write_text(
        "[connection]\ninterface-name=eth0\n[ipv4]\nmethod=manual\n"
    )
    assert source(roots).ip_info("00:15:5D:00:00:01", 0).dhcp_enabled is False


def test_dhcp_from_ifupdown(roots):
    (roots / "run" / "network").mkdir()
    (roots / "run" / "network" / "ifstate.eth0").write_text("eth0\n")
    (roots / "etc" / "network").mkdir()
    (roots / "etc" / "network" / "interfaces").write_text("auto eth0\niface eth0 inet dhcp\n")
    assert source(roots).ip_info("00:15:5D:00:00:01", 0).dhcp_enabled is True


def test_resolved_stub_is_replaced_by_upstream(roots):
    (roots / "etc" / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    (roots / "run" / "systemd" / "resolve").mkdir(parents=True)
    (roots / "run" / "systemd" / "resolve" / "resolv.conf").write_text("nameserver 192.0.2.99\n")
    assert source(roots).ip_info("00:15:5D:00:00:01", 0).dns_addr == "192.0.2.99;"


def test_join_limited_keeps_whole_items():
    assert join_limited(["aaa", "bbb", "ccc"], 9) == "aaa;bbb"
    assert join_limited(["aaa", "bbb"], 9, trailing=True) == "aaa;bbb;"
    assert join_limited(["aaa", "bbb"], 8, trailing=True) == "aaa;"
