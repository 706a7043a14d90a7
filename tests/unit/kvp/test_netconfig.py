"""SET_IP_INFO application: detection, rendering, atomic files, rollback, deadline."""

from __future__ import annotations

import json
import os
from ipaddress import ip_address, ip_interface

import pytest

from hvguest.command import CommandResult
from hvguest.kvp.netconfig import NetConfigurator, detect_stack
from hvguest.kvp.netrender import render_ifupdown, render_networkd
from hvguest.paths import Paths
from hvguest.wire.ipconfig import IpConfig, LinkName, MacAddress
from hvguest.wire.status import HvStatus

GUID = "a3c5e2f0-1111-2222-3333-444455556666"
ETH0 = LinkName("eth0")


def config(dhcp=False, addresses=(), gateways=(), dns=(), guid=GUID):
    return IpConfig(
        guid,
        dhcp,
        tuple(ip_interface(a) for a in addresses),
        tuple(ip_address(g) for g in gateways),
        tuple(ip_address(d) for d in dns),
    )


CONFIG = config(
    False,
    ("192.0.2.20/24", "192.0.2.21/24", "2001:db8::20/64"),
    ("192.0.2.1", "2001:db8::1"),
    ("192.0.2.53", "2001:db8::53"),
)


@pytest.fixture()
def roots(tmp_path):
    net = tmp_path / "sys" / "class" / "net" / "eth0"
    (net / "device").mkdir(parents=True)
    (net / "device" / "device_id").write_text("{" + GUID.upper() + "}\n")
    (net / "address").write_text("00:15:5d:00:00:01\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    return tmp_path


def paths(roots):
    return Paths(sys=str(roots / "sys"), os_etc=str(roots / "etc"))


class Recorder:
    def __init__(self, codes=None):
        self.calls = []
        self.codes = codes or {}

    def __call__(self, argv, timeout):
        self.calls.append((tuple(argv), timeout))
        code = self.codes.get(argv[0], 0)
        return CommandResult(code, "boom" if code else "")


def which_all(name):
    return "/usr/bin/" + name


def test_unknown_adapter(roots):
    cfg = config(True, guid="00000000-0000-0000-0000-000000000000")
    out = NetConfigurator(paths(roots), runner=Recorder(), which=which_all).apply(cfg)
    assert out.status == HvStatus.HV_GUID_NOTFOUND


def test_detection_order(roots):
    p = paths(roots)
    assert detect_stack(p, which_all) is None
    (roots / "etc" / "network").mkdir()
    (roots / "etc" / "network" / "interfaces").write_text("")
    assert detect_stack(p, which_all) == "ifupdown"
    (roots / "run" / "systemd" / "netif").mkdir(parents=True)
    (roots / "run" / "systemd" / "netif" / "state").write_text("OPER_STATE=routable\n")
    assert detect_stack(p, which_all) == "networkd"
    (roots / "run" / "NetworkManager").mkdir()
    assert detect_stack(p, which_all) == "networkmanager"
    (roots / "etc" / "netplan").mkdir()
    (roots / "etc" / "netplan" / "50-cloud-init.yaml").write_text("network: {}\n")
    assert detect_stack(p, which_all) == "netplan"
    assert detect_stack(p, lambda name: None) is None  # tools missing: nothing to drive


def test_networkmanager_keyfile(roots):
    (roots / "run" / "NetworkManager").mkdir()
    runner = Recorder()
    out = NetConfigurator(paths(roots), runner=runner, which=which_all).apply(CONFIG)
    assert out.status == HvStatus.HV_S_OK, out.detail
    path = roots / "etc" / "NetworkManager" / "system-connections" / "hvguest-eth0.nmconnection"
    text = path.read_text()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert "interface-name=eth0" in text and "mac-address=00:15:5D:00:00:01" in text
    assert "address1=192.0.2.20/24\naddress2=192.0.2.21/24" in text
    assert "method=manual" in text and "gateway=192.0.2.1" in text
    assert "dns=192.0.2.53;" in text and "address1=2001:db8::20/64" in text
    assert [c[0] for c in runner.calls] == [
        ("nmcli", "connection", "reload"),
        ("nmcli", "connection", "up", "hvguest-eth0"),
    ]


def test_networkd_file_and_dhcp():
    text = render_networkd(
        config(True, dns=("192.0.2.53",)), ETH0, MacAddress("00:15:5D:00:00:01")
    )
    assert "Name=eth0" in text and "DHCP=ipv4" in text and "DNS=192.0.2.53" in text
    assert "MACAddress=00:15:5d:00:00:01" in text
    text = render_networkd(CONFIG, ETH0, None)
    assert "Address=2001:db8::20/64" in text and "Gateway=192.0.2.1" in text


def test_netplan_is_valid_yaml(roots):
    import yaml

    (roots / "etc" / "netplan").mkdir()
    (roots / "etc" / "netplan" / "50-cloud-init.yaml").write_text("network: {}\n")
    runner = Recorder()
    out = NetConfigurator(paths(roots), runner=runner, which=which_all).apply(CONFIG)
    assert out.status == HvStatus.HV_S_OK
    doc = yaml.safe_load((roots / "etc" / "netplan" / "90-hvguest-eth0.yaml").read_text())
    eth = doc["network"]["ethernets"]["eth0"]
    assert eth["addresses"] == ["192.0.2.20/24", "192.0.2.21/24", "2001:db8::20/64"]
    assert {"to": "default", "via": "192.0.2.1"} in eth["routes"]
    assert runner.calls[0][0] == ("netplan", "apply")
    json.dumps(doc)


def test_ifupdown_stanza():
    text = render_ifupdown(CONFIG, ETH0, None)
    assert text.split("\n")[1:] == [
        "auto eth0",
        "iface eth0 inet static",
        "    address 192.0.2.20/24",
        "    gateway 192.0.2.1",
        "    dns-nameservers 192.0.2.53 2001:db8::53",
        "iface eth0 inet static",  # one stanza per address: no shell "up" lines
        "    address 192.0.2.21/24",
        "iface eth0 inet6 static",
        "    address 2001:db8::20/64",
        "    gateway 2001:db8::1",
        "",
    ]


def test_failure_restores_previous_file(roots):
    (roots / "run" / "systemd" / "netif").mkdir(parents=True)
    (roots / "run" / "systemd" / "netif" / "state").write_text("")  # networkd runs
    target = roots / "etc" / "systemd" / "network" / "10-hvguest-eth0.network"
    target.parent.mkdir(parents=True)
    target.write_text("previous\n")
    runner = Recorder({"networkctl": 1})
    out = NetConfigurator(paths(roots), runner=runner, which=which_all).apply(CONFIG)
    assert out.status == HvStatus.HV_E_FAIL
    assert "previous configuration restored" in out.detail and "boom" in out.detail
    assert target.read_text() == "previous\n"
    # reload attempted once for the change and once after the restore
    assert [c[0][:2] for c in runner.calls] == [("networkctl", "reload"), ("networkctl", "reload")]
    assert not [n for n in os.listdir(target.parent) if n.startswith(".hvguest-")]


def test_failure_removes_new_file(roots):
    (roots / "run" / "systemd" / "netif").mkdir(parents=True)
    (roots / "run" / "systemd" / "netif" / "state").write_text("")  # networkd runs
    runner = Recorder({"networkctl": 1})
    NetConfigurator(paths(roots), runner=runner, which=which_all).apply(CONFIG)
    assert not (roots / "etc" / "systemd" / "network" / "10-hvguest-eth0.network").exists()


def test_commands_share_one_deadline(roots):
    (roots / "run" / "NetworkManager").mkdir()
    runner = Recorder()
    NetConfigurator(paths(roots), runner=runner, which=which_all, timeout=9).apply(CONFIG)
    timeouts = [t for _argv, t in runner.calls]
    assert sum(timeouts) < 9  # a share is always kept back for a rollback
    assert all(t > 0 for t in timeouts)


def test_disabled_and_missing_stack(roots):
    out = NetConfigurator(paths(roots), stack="none", runner=Recorder()).apply(CONFIG)
    assert out.status == HvStatus.HV_E_FAIL and "disabled" in out.detail
    out = NetConfigurator(paths(roots), runner=Recorder(), which=lambda n: None).apply(CONFIG)
    assert out.status == HvStatus.HV_E_FAIL and "no supported network stack" in out.detail


def test_networkmanager_rollback_reconnects_the_device(roots):
    (roots / "run" / "NetworkManager").mkdir()
    runner = Recorder()
    runner.codes = {}

    def fail_up(argv, timeout):
        runner.calls.append((tuple(argv), timeout))
        if argv[:3] == ("nmcli", "connection", "up"):
            return CommandResult(4, "activation failed")
        return CommandResult(0, "")

    out = NetConfigurator(paths(roots), runner=fail_up, which=which_all).apply(CONFIG)
    assert out.status == HvStatus.HV_E_FAIL and "activation failed" in out.detail
    assert [c[0] for c in runner.calls][2:] == [
        ("nmcli", "connection", "reload"),
        ("nmcli", "device", "connect", "eth0"),
    ]
    conns = roots / "etc" / "NetworkManager" / "system-connections"
    assert not (conns / "hvguest-eth0.nmconnection").exists()


def test_tool_output_reaches_the_detail_escaped_and_bounded(roots):
    """A network tool's output is not ours: its terminal escapes and newlines must not
    reach the host's log line raw, and only its tail is kept."""
    (roots / "run" / "systemd" / "netif").mkdir(parents=True)
    (roots / "run" / "systemd" / "netif" / "state").write_text("")  # networkd runs
    hostile = "x" * 1000 + "\x1b]0;owned\x07\x1b[2J\nline two\u202e"

    def runner(argv, timeout):
        return CommandResult(1, hostile)

    out = NetConfigurator(paths(roots), runner=runner, which=which_all).apply(CONFIG)
    assert out.status == HvStatus.HV_E_FAIL
    assert out.detail.isascii() and out.detail.isprintable()
    assert "\\x1b]0;owned\\x07\\x1b[2J\\nline two\\u202e" in out.detail
    assert "x" * 300 not in out.detail  # the tail only


def test_static_ipv6_takes_no_router_advertisements():
    # Found on real systemd-networkd (QEMU boot tier): a static push with an IPv6
    # address left the guest with a SLAAC address and an RA default route besides the
    # host's settings. NetworkManager's keyfile (ipv6 method=manual) has none: every
    # renderer must say the same.
    import yaml

    from hvguest.kvp.netrender import render_netplan

    text = render_networkd(CONFIG, ETH0, None)
    assert "IPv6AcceptRA=no" in text.split("\n")
    eth = yaml.safe_load(render_netplan(CONFIG, ETH0, None))["network"]["ethernets"]["eth0"]
    assert eth["accept-ra"] is False
    # IPv4 only, or DHCP: IPv6 stays with the network's router advertisements.
    v4_only = config(False, ("192.0.2.20/24",), ("192.0.2.1",))
    for other in (v4_only, config(True)):
        assert "IPv6AcceptRA" not in render_networkd(other, ETH0, None)
        doc = yaml.safe_load(render_netplan(other, ETH0, None))
        assert "accept-ra" not in doc["network"]["ethernets"]["eth0"]


def test_networkd_directories_alone_are_not_networkd_running(roots):
    # Found on a real Debian 12 ifupdown guest (QEMU boot tier): systemd's tmpfiles
    # (systemd-network.conf) create /run/systemd/netif and its subdirectories at every
    # boot, networkd running or not, and networkctl is in the systemd package; the push
    # went to networkd ("Unit dbus-org.freedesktop.network1.service not found").
    p = paths(roots)
    (roots / "etc" / "network").mkdir()
    (roots / "etc" / "network" / "interfaces").write_text("iface eth0 inet dhcp\n")
    for sub in ("links", "leases", "lldp"):
        (roots / "run" / "systemd" / "netif" / sub).mkdir(parents=True)
    assert detect_stack(p, which_all) == "ifupdown"
    # networkd running writes its manager state there.
    (roots / "run" / "systemd" / "netif" / "state").write_text("OPER_STATE=routable\n")
    assert detect_stack(p, which_all) == "networkd"
