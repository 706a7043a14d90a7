"""A bad configuration stops each daemon with EX_CONFIG (78), the status every unit
lists in RestartPreventExitStatus=, after one line naming the file.

Each daemon runs as a real process the way systemd starts it: its own interpreter,
working directory /, bytecode writing as the unit sets it, every root injected
into a temporary directory (no device, pool or /etc of this machine is touched)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from logging_state import SERVICE_MANAGER_ENV

from hvguest.daemons.common import EXIT_CONFIG

DAEMONS = ("kvpd", "vssd", "fcopyd", "heartbeatd")

BAD_FILES = {
    # A value out of range, a YAML syntax error, a file that is not UTF-8.
    "bad-value": b"log:\n  level: verbose\n",
    "bad-yaml": b"log: [unclosed\n",
    "not-utf8": b"log:\n  level: \xff\xfe\n",
}


def run_daemon(daemon: str, root: Path, extra: list[str]) -> subprocess.CompletedProcess[str]:
    for d in ("dev", "sys", "proc", "pool", "run", "lib"):
        (root / d).mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_MANAGER_ENV}
    args = [sys.executable, "-m", f"hvguest.daemons.{daemon}",
            "--dev-root", str(root / "dev"), "--sys-root", str(root / "sys"),
            "--proc-root", str(root / "proc"), "--pool-dir", str(root / "pool"),
            "--run-dir", str(root / "run"), "--log-target", "stderr", *extra]
    return subprocess.run(args, cwd="/", env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("daemon", DAEMONS)
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_default_config_exits_with_ex_config(daemon: str, case: str, tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "hvguest.yaml"
    config.write_bytes(BAD_FILES[case])
    proc = run_daemon(daemon, tmp_path, ["--etc-dir", str(etc)])
    assert proc.returncode == EXIT_CONFIG == 78, (proc.returncode, proc.stderr)
    # Reported once: exactly one line, naming the daemon and the file.
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"hvguest-{daemon}: {config}"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("daemon", DAEMONS)
def test_missing_explicit_config_exits_with_ex_config(daemon: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    proc = run_daemon(daemon, tmp_path, ["--config", str(missing)])
    assert proc.returncode == EXIT_CONFIG, (proc.returncode, proc.stderr)
    assert proc.stderr == f"hvguest-{daemon}: {missing}: no such file\n"


@pytest.mark.parametrize("daemon", DAEMONS)
def test_runtime_failure_is_not_ex_config(daemon: str, tmp_path: Path) -> None:
    """A valid configuration but no device: the daemon fails (or exits 0 off
    Hyper-V) with a status other than 78, so systemd may still restart it."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hvguest.yaml").write_text("log:\n  level: info\n")
    extra = ["--etc-dir", str(etc)]
    if daemon == "heartbeatd":
        extra.append("--once")
    proc = run_daemon(daemon, tmp_path, extra)
    assert proc.returncode != EXIT_CONFIG, proc.stderr
