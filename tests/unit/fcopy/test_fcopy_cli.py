"""hvguestctl fcopy status / recent / check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hvguest.cli.main import main
from hvguest.paths import Paths
from hvguest.state import StatePublisher


@pytest.fixture
def daemon_pid():
    """A live process that looks like hvguest-fcopyd: status believes a published pid
    only while it runs an hvguest program (a recycled pid is not the daemon)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "hvguest-fcopyd"]
    )
    yield proc.pid
    proc.kill()
    proc.wait()


def publish(run_dir, pid=None, **details):
    pub = StatePublisher("fcopy", Paths(run=str(run_dir)))
    pub.update(state="receiving", device="/dev/vmbus/hv_fcopy", details=details)
    if pid is not None:
        pub.update(pid=pid)
    pub.publish()


def test_status_shows_progress(tmp_path, capsys, daemon_pid):
    publish(
        tmp_path,
        daemon_pid,
        transport="legacy",
        in_progress={
            "name": "/tmp/big.iso",
            "bytes_done": 1 << 20,
            "file_size": 4 << 20,
            "seconds": 1.5,
            "temp": None,
        },
        transfers_ok=3,
        transfers_failed=1,
    )
    assert main(["fcopy", "status", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "receiving /tmp/big.iso: 1.0 MiB of 4.0 MiB (25 %)" in out
    assert "3 ok, 1 failed" in out
    assert main(["fcopy", "status", "--json", "--run-dir", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["running"] is True and doc["details"]["in_progress"]["bytes_done"] == 1 << 20


def test_status_without_daemon(tmp_path, capsys):
    assert main(["fcopy", "status", "--run-dir", str(tmp_path)]) == 2
    assert "not running" in capsys.readouterr().out


def test_recent(tmp_path, capsys):
    rec = {
        "name": "/tmp/a",
        "size": 10,
        "file_size": 10,
        "sha256": "ab" * 32,
        "result": "ok",
        "detail": "",
        "duration": 0.5,
        "finished": "2026-01-01T00:00:00Z",
    }
    bad = dict(
        rec,
        name="/etc/passwd",
        result="HV_E_FAIL",
        sha256=None,
        detail="directory '/etc' is outside the allowed roots",
    )
    publish(tmp_path, recent_transfers=[rec, bad])
    assert main(["fcopy", "recent", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.index("/etc/passwd") < out.index("/tmp/a")
    assert "outside the allowed roots" in out
    assert main(["fcopy", "recent", "--json", "--run-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["sha256"] == "ab" * 32


def test_check(tmp_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"fcopy:\n  allowed_roots: ['{root}']\n")
    assert main(["fcopy", "check", f"{root}/a/b/f", "--config", str(cfg)]) == 0
    assert "CREATE_PATH would create" in capsys.readouterr().out
    assert not (root / "a").exists()
    assert main(["fcopy", "check", f"{root}/a/f", "--no-create-path", "--config", str(cfg)]) == 1
    assert main(["fcopy", "check", "/etc/passwd", "--config", str(cfg)]) == 1
    assert "outside the allowed roots" in capsys.readouterr().out
    os.symlink("/etc", root / "etc")
    assert main(["fcopy", "check", f"{root}/etc/passwd", "--json", "--config", str(cfg)]) == 1
    assert "symbolic link" in json.loads(capsys.readouterr().out)["reason"]
