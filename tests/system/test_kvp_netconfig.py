"""SET_IP_INFO application with real processes: success, failure with rollback, and
a hanging tool cut off inside the deadline. The stack's tools are stand-in scripts."""

from __future__ import annotations

import os
import stat
import time
from ipaddress import ip_address, ip_interface

import pytest

from hvguest.kvp.netconfig import NetConfigurator
from hvguest.paths import Paths
from hvguest.wire.ipconfig import IpConfig
from hvguest.wire.status import HvStatus

pytestmark = [pytest.mark.system]

GUID = "a3c5e2f0-1111-2222-3333-444455556666"
CONFIG = IpConfig(
    GUID,
    False,
    (ip_interface("192.0.2.20/24"),),
    (ip_address("192.0.2.1"),),
    (ip_address("192.0.2.53"),),
)


@pytest.fixture()
def roots(tmp_path, monkeypatch):
    net = tmp_path / "sys" / "class" / "net" / "eth0"
    (net / "device").mkdir(parents=True)
    (net / "device" / "device_id").write_text("{" + GUID + "}\n")
    (net / "address").write_text("00:15:5d:00:00:01\n")
    (tmp_path / "etc" / "network" / "interfaces.d").mkdir(parents=True)
    (tmp_path / "etc" / "network" / "interfaces").write_text("source interfaces.d/*\n")
    (tmp_path / "run").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def tool(roots, name: str, body: str) -> None:
    path = roots / "bin" / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> {roots}/calls\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def configurator(roots, timeout=10.0):
    # No /proc/1/comm under the roots: systemd does not run there, the tools are
    # run directly (the machine's own PID 1 plays no part).
    paths = Paths(sys=str(roots / "sys"), os_etc=str(roots / "etc"), proc=str(roots / "proc"))
    return NetConfigurator(paths, timeout=timeout)


def stanza(roots):
    return roots / "etc" / "network" / "interfaces.d" / "hvguest-eth0"


def test_ifupdown_applied(roots):
    tool(roots, "ifdown", "exit 0")
    tool(roots, "ifup", "exit 0")
    out = configurator(roots).apply(CONFIG)
    assert out.status == HvStatus.HV_S_OK, out.detail
    assert "address 192.0.2.20/24" in stanza(roots).read_text()
    assert (roots / "calls").read_text().splitlines() == ["ifdown eth0", "ifup eth0"]


def test_failure_restores_and_reapplies_previous(roots):
    stanza(roots).write_text("iface eth0 inet dhcp\n")
    tool(roots, "ifdown", "exit 0")
    tool(roots, "ifup", 'echo "no carrier" >&2; exit 1')
    out = configurator(roots).apply(CONFIG)
    assert out.status == HvStatus.HV_E_FAIL
    assert "ifup eth0 exited 1: no carrier" in out.detail
    assert stanza(roots).read_text() == "iface eth0 inet dhcp\n"
    calls = (roots / "calls").read_text().splitlines()
    # the change, then the restored file brought up again
    assert calls == ["ifdown eth0", "ifup eth0"] * 2


def test_hanging_tool_is_cut_off_inside_the_deadline(roots):
    tool(roots, "ifdown", "exit 0")
    tool(roots, "ifup", "exec sleep 30")
    started = time.monotonic()
    out = configurator(roots, timeout=3.0).apply(CONFIG)
    elapsed = time.monotonic() - started
    assert out.status == HvStatus.HV_E_FAIL and "timed out" in out.detail
    assert elapsed < 3.0 + 1.5  # the deadline, plus process start-up slack
    assert not stanza(roots).exists()


def test_helper_processes_of_a_hanging_tool_are_killed_too(roots):
    tool(roots, "ifdown", "exit 0")
    tool(roots, "ifup", "sleep 30 & sleep 30; wait")
    started = time.monotonic()
    out = configurator(roots, timeout=3.0).apply(CONFIG)
    assert out.status == HvStatus.HV_E_FAIL
    assert time.monotonic() - started < 3.0 + 1.5
