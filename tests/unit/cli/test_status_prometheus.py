"""hvguestctl status --prometheus: the status document as metrics, checked by
Prometheus' own promtool, parsed back with prometheus_client, and written for
node_exporter's textfile collector (atomically, never during a freeze)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_status import FakeTs, collect, write_state

from hvguest.cli.main import main as hvguestctl
from hvguest.paths import Paths
from hvguest.status.prometheus import render

T = "2026-01-02T03:04:05Z"
T_EPOCH = 1767323045.0

RICH = {
    "kvp": {"protocol_version": "3.1",
            "pools": {str(n): {"records": n, "path": "x"} for n in range(5)},
            "by_op": {"get": 10, "set": 4}, "failures_by_op": {"set": 1}},
    "vss": {"frozen": False,
            "stats": {"ok": 3, "failed": 1, "last_ok": T_EPOCH, "last_failed": T_EPOCH - 60,
                      "hooks_run": 8, "hooks_failed": 1},
            "last_freeze": {"time": T, "ok": True, "reason": "", "freeze_ms": 114.0,
                            "mounts": [{"state": "thawed"}, {"state": "thawed"},
                                       {"state": "skipped"}], "hooks": []}},
    "fcopy": {"transport": "uio", "in_progress": None, "transfers_ok": 5,
              "transfers_failed": 2, "bytes_received": 123456,
              "recent_transfers": [{"name": "a", "finished": T}]},
    "heartbeat": {"heartbeat": {"contact": "contact", "last_contact": T},
                  "health": {"level": "ok", "reason": "", "published": True},
                  "timesync": {"offset_ms": 0.2}},
}


@pytest.fixture
def rich(tmp_path: Any) -> Paths:
    import sysfs_builder

    paths = sysfs_builder.build(str(tmp_path / "m"), kernel="6.12")
    for service, details in RICH.items():
        write_state(paths, service, details=details)
    return paths


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_from_a_rich_document(rich: Paths) -> None:
    doc = collect(rich, timesync_check=FakeTs(offset=1500.0))
    text = render(doc, now=lambda: T_EPOCH + 42)
    got = _samples(text)
    assert got[("hvguest_service_offered", (("service", "vss"),))] == 1
    assert got[("hvguest_daemon_up", (("daemon", "hvguest-kvpd"), ("service", "kvp")))] == 1
    assert got[("hvguest_service_health", (("service", "vss"), ("state", "ok")))] == 1
    assert got[("hvguest_service_health", (("service", "vss"), ("state", "error")))] == 0
    assert got[("hvguest_vss_freezes_total", (("result", "ok"),))] == 3
    assert got[("hvguest_vss_freezes_total", (("result", "failed"),))] == 1
    assert got[("hvguest_vss_last_success_timestamp_seconds", ())] == T_EPOCH
    assert got[("hvguest_vss_last_failure_timestamp_seconds", ())] == T_EPOCH - 60
    assert got[("hvguest_vss_last_freeze_duration_seconds", ())] == pytest.approx(0.114)
    assert got[("hvguest_vss_last_freeze_filesystems", ())] == 2
    assert got[("hvguest_vss_hooks_run_total", ())] == 8
    assert got[("hvguest_vss_hooks_failed_total", ())] == 1
    assert got[("hvguest_fcopy_transfers_total", (("result", "failed"),))] == 2
    assert got[("hvguest_fcopy_received_bytes_total", ())] == 123456
    assert got[("hvguest_fcopy_last_transfer_timestamp_seconds", ())] == T_EPOCH
    assert got[("hvguest_kvp_requests_total", (("operation", "set"), ("status", "ok")))] == 3
    assert got[("hvguest_kvp_requests_total", (("operation", "set"), ("status", "failed")))] == 1
    assert got[("hvguest_kvp_pool_records", (("pool", "3"),))] == 3
    assert got[("hvguest_host_contact", ())] == 1
    assert got[("hvguest_host_contact_age_seconds", ())] == 42
    assert got[("hvguest_clock_offset_seconds", ())] == 1.5
    assert ("hvguest_version_info", (("version", "0.1.0"),)) in got


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="needs promtool (Debian package prometheus; scripts/setup installs it)")
@pytest.mark.parametrize("kind", ["rich", "empty"])
def test_promtool_check_metrics_passes(rich: Paths, tmp_path: Any, kind: str) -> None:
    if kind == "rich":
        text = render(collect(rich))
    else:  # nothing known: not a Hyper-V guest
        text = render(collect(Paths(sys=str(tmp_path / "none"), proc=str(tmp_path / "none"),
                                    run=str(tmp_path / "none"), dev=str(tmp_path / "none"))))
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         timeout=60)
    # promtool also prints lint warnings (names, units) with exit status 0: none allowed.
    assert out.returncode == 0 and out.stdout == b"" and out.stderr == b"", out


def _ctl(paths: Paths, *args: str) -> int:
    return hvguestctl(["status", "--prometheus", "--sys-root", paths.sys, "--proc-root",
                       paths.proc, "--run-dir", paths.run, "--dev-root", paths.dev,
                       "--etc-dir", paths.etc, *args])


def test_textfile_written_atomically_and_not_while_frozen(rich: Paths, tmp_path: Any,
                                                          capsys: Any) -> None:
    textfiles = tmp_path / "node-exporter"
    textfiles.mkdir()
    assert _ctl(rich, "--textfile-dir", str(textfiles)) == 0
    assert os.listdir(textfiles) == ["hvguest.prom"]  # no temporary file left
    first = (textfiles / "hvguest.prom").read_bytes()
    assert b"hvguest_vss_freezes_total" in first
    assert oct((textfiles / "hvguest.prom").stat().st_mode & 0o777) == "0o644"
    # A freeze in progress: the emergency-thaw record exists. Nothing is written.
    (textfiles / "hvguest.prom").unlink()
    with open(os.path.join(rich.run, "vss-frozen.json"), "w") as f:
        f.write('{"pid": 1, "mounts": []}')
    assert _ctl(rich, "--textfile-dir", str(textfiles)) == 0
    assert os.listdir(textfiles) == []
    assert "frozen now" in capsys.readouterr().err


def test_textfile_dir_missing_or_without_prometheus(rich: Paths, tmp_path: Any) -> None:
    assert _ctl(rich, "--textfile-dir", str(tmp_path / "absent")) == 1
    assert not (tmp_path / "absent").exists()
    assert hvguestctl(["status", "--textfile-dir", str(tmp_path)]) == 1


RULES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "packaging", "examples",
                     "prometheus", "hvguest.rules.yml")

RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'hvguest_daemon_up{{instance="vm1",service="vss",daemon="hvguest-vssd"}}'
        values: '0x10'
      - series: 'hvguest_service_offered{{instance="vm1",service="vss"}}'
        values: '1x10'
      - series: 'hvguest_daemon_up{{instance="vm1",service="fcopy",daemon="hvguest-fcopyd"}}'
        values: '0x10'
      - series: 'hvguest_service_offered{{instance="vm1",service="fcopy"}}'
        values: '0x10'
      - series: 'hvguest_host_contact{{instance="vm1"}}'
        values: '0x10'
      - series: 'hvguest_clock_offset_seconds{{instance="vm1"}}'
        values: '-1.5x10'
    alert_rule_test:
      - eval_time: 10m
        alertname: HvguestDaemonDown
        exp_alerts:
          - exp_labels: {{severity: critical, instance: vm1, service: vss,
                         daemon: hvguest-vssd}}
            exp_annotations:
              summary: "vm1: hvguest-vssd is down"
              description: "The host offers vss but hvguest-vssd does not run. See
                'hvguestctl status vss' on the VM."
      - eval_time: 10m
        alertname: HvguestHostContactLost
        exp_alerts:
          - exp_labels: {{severity: critical, instance: vm1}}
            exp_annotations:
              summary: "vm1: no heartbeat from the Hyper-V host"
              description: "The host's heartbeat stopped; check the VM's Heartbeat service."
      - eval_time: 10m
        alertname: HvguestClockOffset
        exp_alerts:
          - exp_labels: {{severity: warning, instance: vm1}}
            exp_annotations:
              summary: "vm1: clock 1.5 s off the host's"
              description: "Run 'hvguestctl timesync setup' on the VM (chrony with the host
                clock)."
  - interval: 1h
    input_series:
      - series: 'hvguest_vss_last_success_timestamp_seconds{{instance="vm1"}}'
        values: '0x30'
      - series: 'hvguest_vss_last_success_timestamp_seconds{{instance="vm2"}}'
        values: '0+3600x30'
    alert_rule_test:
      - eval_time: 25h
        alertname: HvguestNoSuccessfulFreeze
        exp_alerts: []
      - eval_time: 27h
        alertname: HvguestNoSuccessfulFreeze
        exp_alerts:
          - exp_labels: {{severity: warning, instance: vm1}}
            exp_annotations:
              summary: "vm1: no successful backup freeze in 26 hours"
              description: "The last application-consistent freeze succeeded 1d 3h 0m 0s ago.
                See 'hvguestctl vss status' on the VM."
"""


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="needs promtool (Debian package prometheus; scripts/setup installs it)")
def test_example_rules_check_and_fire(tmp_path: Any) -> None:
    rules = os.path.abspath(RULES)
    out = subprocess.run(["promtool", "check", "rules", rules], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS: 5 rules found" in out.stdout, out
    tests = tmp_path / "rules.test.yml"
    tests.write_text(RULE_TESTS.format(rules=json.dumps(rules)))
    out = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_metric_the_rules_name_is_exported(rich: Paths) -> None:
    with open(RULES, encoding="utf-8") as f:
        named = set(re.findall(r"\b(hvguest_[a-z_]+)", f.read()))
    exported = {name for name, _labels in _samples(render(collect(rich)))}
    exported |= {f.name for f in text_string_to_metric_families(render(collect(rich)).decode())}
    assert named and named <= exported, named - exported
