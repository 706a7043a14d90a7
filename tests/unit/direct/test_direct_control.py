"""hvguestctl direct enable/disable/status against a fake systemctl and a private /etc:
what is written, what systemctl is asked, what is refused before anything changes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from hvguest.cli.direct import DirectControl, keys_command_problem, render
from hvguest.command import CommandResult
from hvguest.config import load_config
from hvguest.direct import report
from hvguest.direct.settings import DirectSettings
from hvguest.direct.units import (
    KEYS_DROPIN,
    PORT_DROPIN,
    SERVICE_TEMPLATE,
    SOCKET_UNIT,
    count_connections,
    dropin_dir,
)
from hvguest.errors import LocalUsageError
from hvguest.paths import Paths


class FakeSystemd:
    def __init__(self, units: dict[str, dict[str, str]] | None = None,
                 journal: str = "") -> None:
        self.calls: list[list[str]] = []
        self.units = units or {}
        self.journal = journal

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:2] == ["systemctl", "show"]:
            props = {"LoadState": "not-found", "ActiveState": "inactive", "SubState": "dead",
                     "UnitFileState": "", "NAccepted": "0", **self.units.get(argv[-1], {})}
            return CommandResult(0, "\n".join(f"{k}={v}" for k, v in props.items()))
        if argv[0] == "journalctl":
            return CommandResult(0, self.journal)
        return CommandResult(0, "")

    def actions(self) -> list[list[str]]:
        return [c for c in self.calls if c[:2] != ["systemctl", "show"]]


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "proc/1/comm").write_text("systemd\n")
    (tmp_path / "etc").mkdir()
    return Paths(proc=str(tmp_path / "proc"), etc=str(tmp_path / "etc"),
                 os_etc=str(tmp_path / "os-etc"))


@pytest.fixture
def control(paths: Paths, tmp_path: Path) -> DirectControl:
    sshd = tmp_path / "sshd"
    sshd.write_text("")
    keys = tmp_path / "bin/hvguest-direct-keys"
    keys.parent.mkdir()
    keys.write_text("#!/bin/sh\n")
    keys.chmod(0o755)
    return DirectControl(paths, runner=FakeSystemd(), sshd=str(sshd), keys_command=str(keys))


def settings(paths: Paths) -> DirectSettings:
    result: DirectSettings = load_config(paths.config_file).get(DirectSettings)
    return result


def dropin(paths: Paths, unit: str, name: str) -> Path:
    return Path(dropin_dir(paths, unit)) / name


def test_enable_on_22_then_disable(control: DirectControl, paths: Paths) -> None:
    fake = control.runner
    assert isinstance(fake, FakeSystemd)
    control.enable({})
    assert settings(paths) == DirectSettings(enabled=True)
    assert not dropin(paths, SOCKET_UNIT, PORT_DROPIN).exists()
    assert not dropin(paths, SERVICE_TEMPLATE, KEYS_DROPIN).exists()
    assert fake.actions() == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", SOCKET_UNIT],
        ["systemctl", "restart", SOCKET_UNIT],
        ["systemctl", "try-restart", "hvguest-kvp.service"],
    ]
    fake.calls.clear()
    control.disable()
    assert settings(paths) == DirectSettings(enabled=False)
    assert fake.actions()[0] == ["systemctl", "disable", "--now", SOCKET_UNIT]
    assert fake.actions()[-1] == ["systemctl", "try-restart", "hvguest-kvp.service"]


def test_another_port_and_host_keys_write_dropins(control: DirectControl, paths: Paths) -> None:
    control.enable({"port": 5022, "authorized_keys_from_host": True, "user": "ops"})
    socket_text = dropin(paths, SOCKET_UNIT, PORT_DROPIN).read_text()
    assert "ListenStream=\nListenStream=vsock::5022\n" in socket_text
    service_text = dropin(paths, SERVICE_TEMPLATE, KEYS_DROPIN).read_text()
    assert ('ExecStart=\nExecStart=-/usr/sbin/sshd -i -o "AuthorizedKeysCommand='
            '/usr/bin/hvguest-direct-keys %%u %%f" -o AuthorizedKeysCommandUser=nobody\n'
            ) in service_text
    control.enable({"port": 22, "authorized_keys_from_host": False})
    assert not dropin(paths, SOCKET_UNIT, PORT_DROPIN).exists()
    assert not dropin(paths, SERVICE_TEMPLATE, KEYS_DROPIN).exists()
    control.enable({"port": 6000, "authorized_keys_from_host": True, "user": "ops"})
    control.disable()  # off: the drop-ins go, sshd gets no keys from the host
    assert not os.path.exists(dropin_dir(paths, SERVICE_TEMPLATE))
    assert not os.path.exists(dropin_dir(paths, SOCKET_UNIT))
    assert settings(paths) == DirectSettings(False, 6000, True, "ops")


def unchanged(control: DirectControl, paths: Paths) -> None:
    assert not os.path.exists(paths.config_file)
    assert not os.path.exists(paths.os_etc)
    fake = control.runner
    assert isinstance(fake, FakeSystemd)
    assert fake.actions() == []


def test_refuses_to_bind_what_systemds_sshd_vsock_serves(control: DirectControl,
                                                          paths: Paths) -> None:
    fake = control.runner
    assert isinstance(fake, FakeSystemd)
    fake.units["sshd-vsock.socket"] = {"LoadState": "loaded", "ActiveState": "active",
                                       "SubState": "listening", "UnitFileState": "generated"}
    with pytest.raises(LocalUsageError, match="sshd-vsock.socket already serves SSH on vsock "
                       "port 22.*nothing was changed"):
        control.enable({})
    unchanged(control, paths)
    control.enable({"port": 2222})  # no double bind on another port
    assert control.said and "sshd-vsock.socket also serves" in control.said[0]


def test_refuses_without_sshd_or_systemd(control: DirectControl, paths: Paths) -> None:
    os.unlink(control.sshd)
    with pytest.raises(LocalUsageError, match="install openssh-server"):
        control.enable({})
    unchanged(control, paths)
    Path(control.sshd).write_text("")
    Path(paths.proc, "1/comm").write_text("init\n")
    with pytest.raises(LocalUsageError, match="PID 1 is not systemd"):
        control.enable({})
    unchanged(control, paths)


def test_refuses_a_keys_helper_someone_else_could_change(control: DirectControl,
                                                         paths: Paths) -> None:
    """sshd would run it for every login attempt: a helper another user can rewrite is
    a way in (its directory too)."""
    os.chmod(control.keys_command, 0o757)
    with pytest.raises(LocalUsageError, match="writable by group or others"):
        control.enable({"authorized_keys_from_host": True, "user": "ops"})
    unchanged(control, paths)
    os.chmod(control.keys_command, 0o755)
    os.chmod(os.path.dirname(control.keys_command), 0o777)
    with pytest.raises(LocalUsageError, match="writable by group or others"):
        control.enable({"authorized_keys_from_host": True, "user": "ops"})
    unchanged(control, paths)
    os.chmod(os.path.dirname(control.keys_command), 0o755)
    os.chown(control.keys_command, 65534, 65534)
    assert keys_command_problem(control.keys_command) is not None


def test_refuses_invalid_changes(control: DirectControl, paths: Paths) -> None:
    with pytest.raises(LocalUsageError, match="user is empty"):
        control.enable({"authorized_keys_from_host": True})
    unchanged(control, paths)


# -- status -------------------------------------------------------------------------

JOURNAL = "\n".join([
    '{"_PID":"1","MESSAGE_ID":"39f53479d3a045ac8e11786248231fbf"}',
    '{"_PID":"1","JOB_TYPE":"start","JOB_RESULT":"done"}',
    '{"_PID":"812","MESSAGE_ID":"39f53479d3a045ac8e11786248231fbf"}',  # not PID 1
    '{"_PID":"1","JOB_TYPE":"stop","JOB_RESULT":"done"}',
    "Warning: journal has been rotated",
])


def test_connections_are_counted_from_pid1_start_records() -> None:
    assert count_connections(JOURNAL) == 2


def test_status_reports_disagreement_and_instructions(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    fake = FakeSystemd({SOCKET_UNIT: {"LoadState": "loaded", "ActiveState": "inactive",
                                      "SubState": "dead", "UnitFileState": "disabled"}},
                       journal=JOURNAL)
    doc = report.collect(DirectSettings(enabled=True, port=2222), fake, use_systemd=True,
                         sshd=__file__)
    assert doc["service_guid"] == "000008ae-facb-11e6-bd58-64006a7986d3"
    assert doc["connections_since_boot"] == 2
    assert doc["published"] == "ssh vsock:2222"
    assert doc["problems"] == [f"direct.enabled is true but {SOCKET_UNIT} is inactive/dead: "
                               "run hvguestctl direct enable"]
    render(doc)
    out = capsys.readouterr().out
    assert "port:        vsock 2222, service GUID 000008ae-facb-11e6-bd58-64006a7986d3" in out
    assert "connections: 2 since boot (journal)" in out
    assert "GuestCommunicationServices' -Name '000008ae-facb-11e6-bd58-64006a7986d3'" in out
    assert report.summary(doc).startswith("on: vsock port 2222 (inactive, 2 connections)")


def test_status_when_off_and_listening_nowhere() -> None:
    fake = FakeSystemd({SOCKET_UNIT: {"LoadState": "loaded"}})
    doc = report.collect(DirectSettings(), fake, use_systemd=True)
    assert doc["problems"] == [] and doc["published"] is None
    assert doc["connections_since_boot"] is None  # the journal is not read
    assert report.summary(doc) == "off: vsock port 22 (inactive)"


def test_status_summary_has_a_direct_row() -> None:
    import io

    from hvguest.status.document import SERVICES, absent_entry
    from hvguest.status.render_text import render_summary

    doc = report.collect(DirectSettings(enabled=True), FakeSystemd(
        {SOCKET_UNIT: {"LoadState": "loaded", "ActiveState": "active",
                       "SubState": "listening", "UnitFileState": "enabled"}},
        journal=JOURNAL), use_systemd=True, sshd=__file__)
    doc["summary"] = report.summary(doc)
    status_doc: dict[str, object] = {
        "hyperv": True, "overall": "ok", "vmbus_devices": 0, "problems": [],
        "unreadable": [], "services": {s: absent_entry(s) for s in SERVICES}, "direct": doc}
    out = io.StringIO()
    render_summary(status_doc, out)  # type: ignore[arg-type]
    rows = [line for line in out.getvalue().splitlines() if line.startswith("direct ")]
    assert rows == ["direct     -        vsock                sshd         "
                    "on: vsock port 22 (listening, 2 connections)"]


def test_status_says_when_sshd_is_gone(tmp_path: Path) -> None:
    fake = FakeSystemd({SOCKET_UNIT: {"LoadState": "loaded", "ActiveState": "active",
                                      "SubState": "listening"}})
    doc = report.collect(DirectSettings(enabled=True), fake, use_systemd=True,
                         sshd=str(tmp_path / "sshd"))
    assert doc["problems"][0].endswith("sshd is missing: install openssh-server "
                                       "(every connection is closed at once)")
