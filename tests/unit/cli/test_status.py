"""hvguestctl status: fixture sysfs trees + fixture state files -> report, exit code,
human screen, and a --json document valid against the documented schema in every state."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import jsonschema
import pytest

from hvguest import status
from hvguest.cli.main import main as hvguestctl
from hvguest.command import CommandResult
from hvguest.paths import Paths
from hvguest.status import collect as report
from hvguest.status.document import SERVICES
from hvguest.timesync import check as timesync
from hvguest.timesync import ptp as ptp_clock

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "sysfs"))
import sysfs_builder  # noqa: E402

SCHEMA_PATH = os.path.join(os.path.dirname(status.__file__), "status_schema.json")
with open(SCHEMA_PATH, encoding="utf-8") as _f:
    SCHEMA = json.load(_f)
PIDS = {"kvp": 4101, "vss": 4102, "fcopy": 4103, "heartbeat": 4104}
T = "2026-01-02T03:04:05Z"


def validate(doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)


class FakeTs:
    """A healthy time sync reading without touching a clock."""

    def __init__(self, offset: float | None = 0.4, error: str | None = None,
                 source_state: str | None = "selected") -> None:
        self.offset, self.error, self.source_state = offset, error, source_state

    def __call__(self, paths: Paths) -> timesync.TimesyncStatus:
        st = timesync.TimesyncStatus(ptp_clock.find_hyperv_ptp(paths), warn_offset_ms=100)
        st.offset_ms, st.error = self.offset, self.error
        st.chrony_installed, st.chrony_refclock = True, "/etc/chrony/conf.d/x.conf:1"
        st.chrony_source_state = self.source_state
        return st


def write_state(paths: Paths, service: str, *, alive: bool = True, **fields: Any) -> None:
    doc: dict[str, Any] = {
        "service": service, "pid": PIDS[service], "started": T, "updated": T,
        "version": "0.1.0", "device": None, "state": "ready",
        "last_op": {"op": "set", "result": "ok", "detail": "", "time": T},
        "recent": [{"op": "set", "result": "ok", "detail": "", "time": T}],
        "last_error": None, "details": {},
    }
    details = fields.pop("details", {})
    doc.update(fields)
    doc["details"].update(details)
    os.makedirs(paths.run, exist_ok=True)
    with open(os.path.join(paths.run, f"{service}.json"), "w") as f:
        json.dump(doc, f)
    if alive:
        cmdline = f"/usr/bin/python3 /usr/bin/hvguest-{service}d"
        sysfs_builder.add_process(paths, PIDS[service], cmdline)


HEALTHY_DETAILS = {
    "kvp": {"protocol_version": "3.1", "pools": {str(n): {"records": n, "path": "x"}
                                                 for n in range(5)}},
    "vss": {"frozen": False, "last_freeze": None},
    "fcopy": {"transport": "uio", "in_progress": None, "recent_transfers": []},
    "heartbeat": {"heartbeat": {"contact": "contact", "last_contact": T},
                  "health": {"level": "ok", "reason": "no failed units", "published": True},
                  "timesync": {"offset_ms": 0.2}},
}


@pytest.fixture
def healthy(tmp_path: Any) -> Paths:
    paths = sysfs_builder.build(str(tmp_path / "m"), kernel="6.12")
    for service, details in HEALTHY_DETAILS.items():
        write_state(paths, service, details=details)
    return paths


def collect(paths: Paths, **kw: Any) -> dict[str, Any]:
    kw.setdefault("timesync_check", FakeTs())
    kw.setdefault("use_systemd", False)
    doc = report.collect(paths, **kw)
    validate(doc)
    return doc


def test_schema_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_healthy(healthy: Paths) -> None:
    doc = collect(healthy)
    assert doc["overall"] == "ok" and doc["exit_code"] == 0 and doc["hyperv"]
    assert list(doc["services"]) == list(SERVICES)
    kvp = doc["services"]["kvp"]
    assert kvp["offered"] and kvp["driver"] == "hv_utils" and kvp["driver_bound"]
    assert kvp["daemon"]["running"] and kvp["daemon"]["source"] == "pid"
    assert kvp["protocol_version"] == "3.1"
    assert kvp["last_op"]["op"] == "set" and kvp["details"]["pools"]["4"]["records"] == 4
    fcopy = doc["services"]["fcopy"]
    assert fcopy["driver"] == "uio_hv_generic" and fcopy["device"]["uio"] == "uio0"
    assert doc["services"]["timesync"]["details"]["offset_ms"] == 0.4
    assert doc["services"]["heartbeat"]["details"]["health"]["level"] == "ok"
    assert doc["services"]["shutdown"]["daemon"]["name"] == "hvguest-heartbeatd"
    # Kernel-answered services: the negotiated version from the kernel log.
    versions = {s: e["protocol_version"] for s, e in doc["services"].items()}
    assert versions == {"heartbeat": "3.0", "shutdown": "3.2", "timesync": "4.0",
                        "kvp": "3.1", "vss": "7.0", "fcopy": None}
    assert all(s["health"] == "ok" for s in doc["services"].values())


def test_daemon_down_is_an_error_with_remedy(healthy: Paths) -> None:
    os.unlink(os.path.join(healthy.run, "kvp.json"))
    # vss: a state file left behind by a dead daemon.
    import shutil

    shutil.rmtree(os.path.join(healthy.proc, str(PIDS["vss"])))
    doc = collect(healthy)
    assert doc["overall"] == "error" and doc["exit_code"] == 1
    kvp = doc["services"]["kvp"]
    assert kvp["health"] == "error" and not kvp["daemon"]["running"]
    assert kvp["daemon"]["source"] == "none"
    assert "no IP address" in kvp["problems"][0]["message"]
    assert "systemctl start hvguest-kvp.service" in kvp["problems"][0]["remedy"]
    vss = doc["services"]["vss"]
    assert vss["daemon"]["stale_state"] and vss["health"] == "error"


def test_pid_reuse_is_not_a_running_daemon(healthy: Paths) -> None:
    sysfs_builder.add_process(healthy, PIDS["fcopy"], "/usr/sbin/sshd -D")
    doc = collect(healthy)
    assert not doc["services"]["fcopy"]["daemon"]["running"]


def test_heartbeatd_down_is_degraded(healthy: Paths) -> None:
    os.unlink(os.path.join(healthy.run, "heartbeat.json"))
    doc = collect(healthy)
    assert doc["overall"] == "degraded" and doc["exit_code"] == 2
    assert doc["services"]["heartbeat"]["health"] == "degraded"


def test_device_absent_is_off_with_enable_remedy(tmp_path: Any) -> None:
    paths = sysfs_builder.build(str(tmp_path / "m"), omit=["vss", "fcopy"])
    for service, details in HEALTHY_DETAILS.items():
        write_state(paths, service, details=details)
    doc = collect(paths)
    vss, fcopy = doc["services"]["vss"], doc["services"]["fcopy"]
    assert vss["health"] == "off" and not vss["offered"] and vss["device"] is None
    assert "Backup (volume shadow copy)" in vss["problems"][0]["message"]
    assert fcopy["problems"][0]["message"].startswith(
        "Guest Service Interface is disabled on the host")
    assert ("Enable-VMIntegrationService -VMName <vm> -Name 'Guest Service Interface'"
            in fcopy["problems"][0]["remedy"])
    # Not offered is the host's choice: informational, exit code unchanged.
    assert doc["overall"] == "ok" and doc["exit_code"] == 0


def test_frozen_and_transfer_in_progress(healthy: Paths) -> None:
    write_state(healthy, "vss", state="frozen", details={
        "frozen": True, "frozen_mounts": ["/", "/data"],
        "last_freeze": {"time": T, "ok": True, "reason": "", "freeze_ms": 12.5, "mounts": [
            {"mount_point": "/", "fstype": "ext4", "state": "frozen"},
            {"mount_point": "/data", "fstype": "xfs", "state": "frozen"}]}})
    write_state(healthy, "fcopy", state="receiving", details={
        "transport": "uio", "recent_transfers": [],
        "in_progress": {"name": "/srv/in/big.iso", "bytes_done": 4096, "file_size": 1 << 20}})
    doc = collect(healthy)
    vss = doc["services"]["vss"]
    assert vss["details"]["frozen"] is True
    assert vss["details"]["last_freeze"]["mounts"][1]["state"] == "frozen"
    assert any("frozen now" in p["message"] for p in vss["problems"])
    fcopy = doc["services"]["fcopy"]
    assert fcopy["details"]["in_progress"]["bytes_done"] == 4096
    assert doc["exit_code"] == 0


def test_last_error_is_degraded_and_failed_state_is_error(healthy: Paths) -> None:
    write_state(healthy, "fcopy", last_error={
        "message": "/srv/in/x: failed: disk full", "remedy": "free space", "time": T},
        details=HEALTHY_DETAILS["fcopy"])
    doc = collect(healthy)
    assert doc["exit_code"] == 2
    p = doc["services"]["fcopy"]["problems"][0]
    assert "disk full" in p["message"] and p["remedy"] == "free space"
    assert doc["services"]["fcopy"]["last_error"]["message"].endswith("disk full")
    write_state(healthy, "kvp", state="failed", last_error={
        "message": "cannot open /dev/vmbus/hv_kvp: busy", "remedy": "", "time": T})
    doc = collect(healthy)
    assert doc["exit_code"] == 1 and doc["services"]["kvp"]["health"] == "error"


def test_reference_daemon_holding_the_device(healthy: Paths) -> None:
    with open(_mk(healthy, "777/comm"), "w") as f:
        f.write("hv_kvp_daemon\n")
    doc = collect(healthy)
    p = [p for p in doc["services"]["kvp"]["problems"] if "another" in p["message"]][0]
    assert p["message"] == "another hv_kvp_daemon (pid 777) holds /dev/vmbus/hv_kvp"
    # hv-kvp-daemon.service is hvguest's own unit now (an alias): the remedy names the
    # process and the distribution's packages, never a unit name that stops hvguest.
    assert p["remedy"] == ("stop pid 777 and remove what starts it (hyperv-daemons, "
                           "hypervkvpd, linux-cloud-tools)")
    assert doc["exit_code"] == 1


@pytest.mark.parametrize("name", ["hv_kvp_daemon", "hypervkvpd"])
def test_own_daemon_under_the_reference_name_is_not_another(healthy: Paths, name: str) -> None:
    """The units start hvguest-kvpd as /usr/sbin/hv_kvp_daemon: its own process has
    the reference's name and must not be reported as a rival."""
    with open(_mk(healthy, f"{PIDS['kvp']}/comm"), "w") as f:
        f.write(f"{name}\n")
    doc = collect(healthy)
    assert not [p for p in doc["services"]["kvp"]["problems"] if "another" in p["message"]]
    assert doc["exit_code"] == 0


def test_reference_daemon_in_another_mount_namespace_is_ignored(healthy: Paths) -> None:
    # A reference daemon in a container (another mount namespace) sees another /dev.
    with open(_mk(healthy, "777/comm"), "w") as f:
        f.write("hv_kvp_daemon\n")
    os.makedirs(os.path.join(healthy.proc, "self", "ns"))
    os.symlink("mnt:[4026531841]", os.path.join(healthy.proc, "self", "ns", "mnt"))
    os.makedirs(os.path.join(healthy.proc, "777", "ns"))
    os.symlink("mnt:[4026532999]", os.path.join(healthy.proc, "777", "ns", "mnt"))
    assert collect(healthy)["exit_code"] == 0
    os.unlink(os.path.join(healthy.proc, "777", "ns", "mnt"))
    os.symlink("mnt:[4026531841]", os.path.join(healthy.proc, "777", "ns", "mnt"))
    assert collect(healthy)["exit_code"] == 1


def _mk(paths: Paths, rel: str) -> str:
    path = os.path.join(paths.proc, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def test_unbound_drivers(tmp_path: Any) -> None:
    paths = sysfs_builder.build(str(tmp_path / "m"), kernel="6.12", unbind=["fcopy", "vss"])
    _mk(paths, "sys/kernel/osrelease")
    with open(os.path.join(paths.proc, "sys/kernel/osrelease"), "w") as f:
        f.write("6.12.48+deb13-amd64\n")
    for service, details in HEALTHY_DETAILS.items():
        write_state(paths, service, details=details)
    doc = collect(paths)
    fcopy = doc["services"]["fcopy"]
    assert not fcopy["driver_bound"] and fcopy["health"] == "error"
    assert "uio_hv_generic" in fcopy["problems"][0]["remedy"]
    vss = doc["services"]["vss"]
    assert not vss["driver_bound"] and vss["problems"][0]["remedy"] == "modprobe hv_utils"


def test_systemd_unit_state(healthy: Paths) -> None:
    calls: list[list[str]] = []

    def runner(cmd: Sequence[str], timeout: float) -> CommandResult:
        calls.append(list(cmd))
        if cmd[-1] == "hvguest-vss.service":
            return CommandResult(0, "ActiveState=failed\nSubState=failed\n")
        return CommandResult(0, "ActiveState=active\nSubState=running\n")

    doc = collect(healthy, use_systemd=True, runner=runner)
    assert ["systemctl", "show", "--no-pager", "-p", "ActiveState,SubState",
            "hvguest-kvp.service"] in calls
    vss = doc["services"]["vss"]
    assert vss["daemon"]["source"] == "systemd" and vss["daemon"]["active_state"] == "failed"
    assert "(unit failed/failed)" in vss["problems"][0]["message"]
    assert doc["services"]["kvp"]["daemon"]["running"]


def test_timesync_offset_and_stale_clock(healthy: Paths) -> None:
    doc = collect(healthy, timesync_check=FakeTs(offset=250.0))
    ts = doc["services"]["timesync"]
    assert ts["health"] == "degraded" and ts["details"]["offset_exceeded"]
    assert "hvguestctl timesync setup" in ts["problems"][0]["remedy"]
    # ESTALE and no reading published by the daemon: a warning that says why.
    os.unlink(os.path.join(healthy.run, "heartbeat.json"))
    doc = collect(healthy, timesync_check=FakeTs(offset=None, error=ptp_clock.describe_read_error(
        OSError(116, "Stale file handle"))))
    ts = doc["services"]["timesync"]
    assert ts["details"]["offset_ms"] is None and ts["details"]["source"] is None
    assert "600 s" in ts["problems"][0]["message"] and ts["health"] == "degraded"


def test_chrony_not_using_the_host_clock(healthy: Paths) -> None:
    doc = collect(healthy, timesync_check=FakeTs(source_state="unreachable"))
    ts = doc["services"]["timesync"]
    assert ts["health"] == "degraded" and ts["details"]["chrony_source_state"] == "unreachable"
    assert "its source is unreachable" in ts["problems"][0]["message"]


def test_timesync_from_daemon_when_not_root(healthy: Paths) -> None:
    write_state(healthy, "heartbeat", details={
        **HEALTHY_DETAILS["heartbeat"],
        "timesync": {"offset_ms": 1.5, "delay_ms": 0.01, "offset_exceeded": False,
                     "measured_at": T}})
    doc = collect(healthy, timesync_check=FakeTs(offset=None, error="cannot read (run as root)"))
    ts = doc["services"]["timesync"]["details"]
    assert ts["offset_ms"] == 1.5 and ts["source"] == "daemon" and ts["read_error"] is None


def test_shutdown_hooks_reported(healthy: Paths) -> None:
    hook_dir = os.path.join(healthy.etc, "shutdown.d")
    os.makedirs(hook_dir)
    for name, mode in (("10-ok", 0o755), ("20-bad", 0o777)):
        with open(os.path.join(hook_dir, name), "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(os.path.join(hook_dir, name), mode)
    with open(os.path.join(healthy.run, "shutdown-hooks.json"), "w") as f:
        json.dump({"time": T, "action": "poweroff", "results": [
            {"hook": "10-ok", "result": "timeout", "returncode": None, "seconds": 30.0,
             "detail": "killed"}]}, f)
    doc = collect(healthy)
    sd = doc["services"]["shutdown"]
    assert [h["name"] for h in sd["details"]["hooks"]] == ["10-ok", "20-bad"]
    messages = " ".join(p["message"] for p in sd["problems"])
    assert "writable by group or others" in messages and "timeout" in messages
    assert sd["health"] == "degraded"


def test_heartbeat_no_contact_and_app_health(healthy: Paths) -> None:
    write_state(healthy, "heartbeat", details={
        "heartbeat": {"contact": "no-contact", "last_contact": T},
        "health": {"level": "critical", "reason": "1 of 1 units down: db.service failed"}})
    doc = collect(healthy)
    hb = doc["services"]["heartbeat"]
    assert hb["details"]["contact"] == "no-contact"
    assert any("no heartbeat" in p["message"] for p in hb["problems"])
    assert any("critical" in p["message"] for p in hb["problems"])
    assert doc["exit_code"] == 2


def test_unreadable_state_is_listed(healthy: Paths) -> None:
    os.unlink(os.path.join(healthy.run, "vss.json"))
    os.mkdir(os.path.join(healthy.run, "vss.json"))
    doc = collect(healthy)
    assert any(u.startswith(os.path.join(healthy.run, "vss.json")) for u in doc["unreadable"])


def test_non_hyperv(tmp_path: Any) -> None:
    paths = sysfs_builder.build_non_hyperv(str(tmp_path))
    doc = collect(paths)
    assert doc["overall"] == "not-hyperv" and doc["exit_code"] == 0 and not doc["hyperv"]
    assert "not a Hyper-V guest" in doc["summary"] and "nothing to do" in doc["summary"]
    assert all(s["health"] == "absent" for s in doc["services"].values())


# -- the command ---------------------------------------------------------------------


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    class Clock:
        def __init__(self, dev: str) -> None:
            pass

        def sample(self) -> tuple[float, float, float]:
            return 10.0, 10.0, 10.0

        def close(self) -> None:
            pass

    monkeypatch.setattr(ptp_clock, "PhcClockSource", Clock)


def _root(paths: Paths) -> str:
    return os.path.dirname(paths.sys)


def test_cli_summary_fits_one_screen(healthy: Paths, fake_clock: None,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert hvguestctl(["status", "--root-dir", _root(healthy)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("hvguest status:  OK")
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 120
    for service in SERVICES:
        assert any(line.startswith(service) for line in lines)


def test_cli_summary_worst_case_fits(tmp_path: Any, fake_clock: None,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    paths = sysfs_builder.build(str(tmp_path / "m"), kernel="6.12", unbind=["fcopy"],
                                omit=["vss"])
    assert hvguestctl(["status", "--root-dir", _root(paths)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 24
    assert lines[0].startswith("hvguest status:  ERROR")
    assert any(line.startswith("x ") for line in lines)
    assert "more: hvguestctl status SERVICE" in lines[-1]


@pytest.mark.parametrize("state", ["healthy", "daemon-down", "device-absent", "frozen",
                                   "transfer", "not-hyperv"])
def test_cli_json_valid_in_every_state(state: str, tmp_path: Any, fake_clock: None,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    if state == "not-hyperv":
        paths = sysfs_builder.build_non_hyperv(str(tmp_path))
    else:
        paths = sysfs_builder.build(str(tmp_path / "m"), kernel="6.12",
                                    omit=["vss"] if state == "device-absent" else [])
        for service, details in HEALTHY_DETAILS.items():
            if not (state == "daemon-down" and service == "kvp"):
                write_state(paths, service, details=details)
        if state == "frozen":
            write_state(paths, "vss", state="frozen", details={"frozen": True})
        if state == "transfer":
            write_state(paths, "fcopy", state="receiving", details={
                "transport": "uio", "in_progress": {"name": "a", "bytes_done": 1,
                                                    "file_size": 2}})
    rc = hvguestctl(["status", "--json", "--root-dir", _root(paths)])
    doc = json.loads(capsys.readouterr().out)
    validate(doc)
    assert rc == doc["exit_code"]
    assert rc == {"healthy": 0, "daemon-down": 1, "device-absent": 0, "frozen": 0,
                  "transfer": 0, "not-hyperv": 0}[state]
    # Human output for the same state works too.
    hvguestctl(["status", "--root-dir", _root(paths)])
    assert capsys.readouterr().out


def test_cli_vss_detail_per_mount(healthy: Paths, fake_clock: None,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    write_state(healthy, "vss", details={"frozen": False, "last_freeze": {
        "time": T, "ok": False, "reason": "1 of 2 filesystems failed", "freeze_ms": 40.0,
        "mounts": [{"mount_point": "/", "fstype": "ext4", "state": "thawed"},
                   {"mount_point": "/mnt/nfs", "fstype": "nfs4", "state": "failed",
                    "message": "FIFREEZE: EOPNOTSUPP"}],
        "thaw": {"time": T, "ok": True, "why": "freeze failed", "reason": ""}}})
    assert hvguestctl(["status", "vss", "--root-dir", _root(healthy)]) == 0
    out = capsys.readouterr().out
    assert "last freeze: 2026-01-02T03:04:05Z FAILED 1 of 2 filesystems failed (40.0 ms)" in out
    assert "    /mnt/nfs (nfs4): failed FIFREEZE: EOPNOTSUPP" in out
    assert hvguestctl(["status", "--root-dir", _root(healthy)]) == 0
    assert "last freeze FAILED 03:04:05 (1 failed, 1 thawed)" in capsys.readouterr().out


def test_cli_one_service(healthy: Paths, fake_clock: None,
                         capsys: pytest.CaptureFixture[str]) -> None:
    write_state(healthy, "fcopy", state="receiving", details={
        "transport": "uio", "in_progress": {"name": "/srv/a.iso", "bytes_done": 10,
                                            "file_size": 20}})
    assert hvguestctl(["status", "fcopy", "--root-dir", _root(healthy)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fcopy (Guest Service Interface): ok")
    assert "uio_hv_generic(uio0)" in out and "hvguest-fcopyd running" in out
    assert '"bytes_done": 10' in out
    write_state(healthy, "fcopy", details={"transport": "uio", "in_progress": None,
                                           "recent_transfers": [
        {"name": "/srv/in/b.txt", "size": 5, "file_size": 5, "result": "ok", "detail": "",
         "finished": T}]})
    assert hvguestctl(["status", "fcopy", "--root-dir", _root(healthy)]) == 0
    assert f"    {T} ok /srv/in/b.txt 5/5 bytes" in capsys.readouterr().out
    assert hvguestctl(["status", "kvp", "--root-dir", _root(healthy)]) == 0
    assert "pool records: 0: 0, 1: 1, 2: 2, 3: 3, 4: 4" in capsys.readouterr().out
    assert hvguestctl(["status", "--json", "kvp", "--root-dir", _root(healthy)]) == 0
    doc = json.loads(capsys.readouterr().out)
    validate(doc)
    assert list(doc["services"]) == ["kvp"]


def test_cli_non_hyperv_says_so(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    paths = sysfs_builder.build_non_hyperv(str(tmp_path))
    assert hvguestctl(["status", "--root-dir", _root(paths)]) == 0
    assert "not a Hyper-V guest" in capsys.readouterr().out


def test_cli_reads_run_dir_override(healthy: Paths, tmp_path: Any, fake_clock: None,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = str(tmp_path / "elsewhere")
    os.rename(healthy.run, elsewhere)
    assert hvguestctl(["status", "--root-dir", _root(healthy)]) == 1
    capsys.readouterr()
    assert hvguestctl(["status", "--root-dir", _root(healthy), "--run-dir", elsewhere]) == 0



@pytest.mark.root
def test_cli_without_root_says_what_it_could_not_read() -> None:
    """As an unprivileged user: reads what it can, lists the rest, still answers."""
    import shutil
    import subprocess
    import tempfile

    base = tempfile.mkdtemp(prefix="hvguest-status-")  # pytest's tmp dirs are root-only
    try:
        os.chmod(base, 0o755)
        paths = sysfs_builder.build(os.path.join(base, "m"))
        for service, details in HEALTHY_DETAILS.items():
            write_state(paths, service, details=details)
        os.chmod(os.path.join(paths.run, "vss.json"), 0o600)
        os.chmod(os.path.join(paths.dev, "kmsg"), 0o600)

        def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "hvguest.cli.main", "status", *args,
                 "--root-dir", _root(paths)],
                capture_output=True, text=True, user=65534, group=65534, timeout=60,
                env={"PATH": "/usr/bin:/bin"}, cwd="/",
            )

        r = as_nobody("--json")
        doc = json.loads(r.stdout)
        validate(doc)
        unread = " ".join(doc["unreadable"])
        assert "vss.json: Permission denied" in unread and "kmsg" in unread
        assert doc["services"]["kvp"]["daemon"]["running"]
        assert doc["services"]["heartbeat"]["protocol_version"] is None
        vss = doc["services"]["vss"]
        assert vss["daemon"]["source"] == "unreadable" and vss["health"] == "degraded"
        assert "state file is unreadable" in vss["problems"][0]["message"]
        assert "could not read 2 item(s)" in as_nobody().stdout
    finally:
        shutil.rmtree(base)
