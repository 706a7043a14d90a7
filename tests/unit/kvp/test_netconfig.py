"""SET_IP_INFO application: detection, rendering, atomic files, rollback, deadline."""

from __future__ import annotations

import json
import os
from ipaddress import ip_address, ip_interface

import pytest

from hvguest.command import CommandResult
from hvguest.kvp.netconfig import NetConfigurator, detect_stack, plan_for
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
    # proc under the roots, not the machine's: whether systemd is PID 1 is the test's say
    return Paths(sys=str(roots / "sys"), os_etc=str(roots / "etc"), proc=str(roots / "proc"))


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
    # Neither renderer runs here: only netplan apply can bring the file up.
    assert [c[0] for c in runner.calls] == [("netplan", "apply")]
    json.dumps(doc)


@pytest.mark.parametrize(
    ("running", "expected"),
    [
        (
            "systemd/netif/state",
            [
                ("netplan", "generate"),
                ("networkctl", "reload"),
                ("networkctl", "reconfigure", "eth0"),
            ],
        ),
        (
            "NetworkManager/",
            [
                ("netplan", "generate"),
                ("nmcli", "connection", "reload"),
                ("nmcli", "connection", "up", "netplan-eth0"),
            ],
        ),
    ],
)
def test_netplan_reloads_the_running_renderer_without_netplan_apply(roots, running, expected):
    # netplan apply reloads all of systemd (seconds on a slow guest, and the kernel's
    # window is 30 s): generate, then the renderer's own reload of this interface.
    (roots / "etc" / "netplan").mkdir()
    (roots / "etc" / "netplan" / "50-cloud-init.yaml").write_text("network: {}\n")
    marker = roots / "run" / running
    if running.endswith("/"):
        marker.mkdir(parents=True)
    else:
        marker.parent.mkdir(parents=True)
        marker.write_text("")
    runner = Recorder()
    out = NetConfigurator(paths(roots), runner=runner, which=which_all).apply(CONFIG)
    assert out.status == HvStatus.HV_S_OK, out.detail
    assert [c[0] for c in runner.calls] == expected


class FileWatcher(Recorder):
    """Records, with each command, whether hvguest's stanza file existed at that moment."""

    def __init__(self, path, codes=None):
        super().__init__(codes)
        self.path = path
        self.seen = []

    def __call__(self, argv, timeout):
        self.seen.append((" ".join(argv), self.path.exists()))
        return super().__call__(argv, timeout)


def test_ifupdown_takes_the_interface_down_before_the_file_changes(roots):
    # ifdown deconfigures with the stanzas that brought the interface up: run after the
    # file changed, it would use the new ones (and, on roll-back, find ours gone).
    (roots / "etc" / "network").mkdir()
    (roots / "etc" / "network" / "interfaces").write_text("iface eth0 inet dhcp\n")
    ours = roots / "etc" / "network" / "interfaces.d" / "hvguest-eth0"
    runner = FileWatcher(ours)
    out = NetConfigurator(paths(roots), runner=runner, which=which_all).apply(CONFIG)
    assert out.status == HvStatus.HV_S_OK, out.detail
    assert runner.seen[:2] == [("ifdown eth0", False), ("ifup eth0", True)]
    # The roll-back: down with the new stanzas still there, up once they are gone.
    runner = FileWatcher(ours, {"ifup": 1})
    ours.unlink()
    out = NetConfigurator(paths(roots), runner=runner, which=which_all).apply(CONFIG)
    assert out.status == HvStatus.HV_E_FAIL
    assert runner.seen == [
        ("ifdown eth0", False),
        ("ifup eth0", True),
        ("ifdown eth0", True),
        ("ifup eth0", False),
    ]
    assert not ours.exists()


def test_ifupdown_runs_as_transient_units_where_systemd_runs(roots):
    # The DHCP client ifup starts must be neither kvpd's child nor inside its sandbox.
    (roots / "proc" / "1").mkdir(parents=True)
    (roots / "proc" / "1" / "comm").write_text("systemd\n")
    (roots / "etc" / "network").mkdir()
    (roots / "etc" / "network" / "interfaces").write_text("")
    runner = Recorder()
    out = NetConfigurator(
        paths(roots), runner=runner, which=which_all, timeout=12, clock=lambda: 0.0
    ).apply(CONFIG)
    assert out.status == HvStatus.HV_S_OK, out.detail
    argvs = [c[0] for c in runner.calls]
    unit = ("systemd-run", "--quiet", "--pipe", "--wait", "--collect", "--service-type=simple",
            "-p", "KillMode=process", "-p")  # fmt: skip
    assert argvs[0][: len(unit)] == unit and argvs[0][-2:] == ("ifdown", "eth0")
    assert argvs[1][: len(unit)] == unit and argvs[1][-2:] == ("ifup", "eth0")
    # systemd stops each command at the end of its share, before kvpd stops waiting:
    # 12 s (the clock stands still here) with two shares left and one in reserve: 4 s,
    # then half of what is left: 6 s.
    (down, down_limit), (up, up_limit) = runner.calls[:2]
    assert down[len(unit)] == "RuntimeMaxSec=3" and down_limit == 4
    assert up[len(unit)] == "RuntimeMaxSec=5" and up_limit == 6
    # static IPv6: what router advertisements gave before goes; iproute2 runs directly,
    # within a short fixed limit rather than a share
    assert runner.calls[2:] == [
        (("ip", "-6", "address", "flush", "dev", "eth0", "dynamic"), 3.0),
        (("ip", "-6", "route", "flush", "dev", "eth0", "proto", "ra"), 3.0),
    ]


def test_ifdown_follows_the_recorded_logical_interface():
    # "ifdown --force eth0" deconfigures with eth0's own stanza (the image's DHCP one)
    # whatever ifupdown recorded, leaving hvguest-eth0's addresses and resolver entries
    # behind (seen on a real Debian 12 guest); plain ifdown follows its state.
    plan = plan_for("ifupdown", Paths(os_etc="/nonexistent"), CONFIG, ETH0, None)
    assert plan.release == (("ifdown", "eth0"),)


def test_ifupdown_keeps_router_advertisements_without_static_ipv6(roots):
    (roots / "etc" / "network").mkdir()
    (roots / "etc" / "network" / "interfaces").write_text("")
    runner = Recorder()
    v4_only = config(False, ("192.0.2.20/24",), ("192.0.2.1",))
    NetConfigurator(paths(roots), runner=runner, which=which_all).apply(v4_only)
    assert [" ".join(c[0]) for c in runner.calls] == ["ifdown eth0", "ifup eth0"]


def test_ifupdown_brings_router_advertisements_back_where_ipv6_is_on(roots):
    # A static IPv6 push turned them off (accept_ra 0); going back to DHCP turns them
    # on again, as NetworkManager and networkd do, where the interface has IPv6.
    (roots / "etc" / "network").mkdir()
    (roots / "etc" / "network" / "interfaces").write_text("")
    ours = roots / "etc" / "network" / "interfaces.d" / "hvguest-eth0"
    conf = roots / "proc" / "sys" / "net" / "ipv6" / "conf" / "eth0"
    for disable_ipv6, stanza in (("1\n", False), ("0\n", True)):
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "disable_ipv6").write_text(disable_ipv6)
        NetConfigurator(paths(roots), runner=Recorder(), which=which_all).apply(config(True))
        assert ("iface hvguest-eth0 inet6 auto" in ours.read_text()) is stanza
    # and not beside static IPv6 addresses
    NetConfigurator(paths(roots), runner=Recorder(), which=which_all).apply(CONFIG)
    assert "inet6 auto" not in ours.read_text()


def test_ifupdown_stanza():
    text = render_ifupdown(CONFIG, ETH0, None)
    assert text.split("\n")[1:] == [
        "auto eth0",
        # the image's own "iface eth0" stanzas stay, unused while this file exists
        "mapping eth0",
        "    script /usr/lib/hvguest/ifupdown-mapping",
        # IPv6 first: router advertisements off before anything sets the link up
        "iface hvguest-eth0 inet6 static",
        "    address 2001:db8::20/64",
        "    gateway 2001:db8::1",
        "    accept_ra 0",  # ifup leaves router advertisements on unless told
        "    dns-nameservers 192.0.2.53 2001:db8::53",
        "iface hvguest-eth0 inet static",
        "    address 192.0.2.20/24",
        "    gateway 192.0.2.1",
        "iface hvguest-eth0 inet static",  # one stanza per address: no shell "up" lines
        "    address 192.0.2.21/24",
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
