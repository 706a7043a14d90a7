"""The reference daemons' names as processes: started by hand without -n they detach
as the kernel's daemons do; with -n, or under a notify unit, they stay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system]

# The daemon behind the name is replaced by one that reports where and how it runs
# and then waits: what is under test is the start-up, not the daemon.
STUB = textwrap.dedent("""
    import json, os, sys, time
    from hvguest.cli import upstream
    report = sys.argv[1]
    def fake_main(service):
        def main(argv):
            tmp = report + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"pid": os.getpid(), "sid": os.getsid(0), "cwd": os.getcwd(),
                           "stdout": os.readlink("/proc/self/fd/1"), "argv": argv,
                           "service": service}, f)
            os.rename(tmp, report)
            time.sleep(60)
            return 0
        return main
    upstream._daemon_main = fake_main
    sys.exit(upstream.run(sys.argv[2], sys.argv[3:]))
""")


def start(tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None,
          ) -> tuple[subprocess.Popen[bytes], Path]:
    report = tmp_path / "report.json"
    config = tmp_path / "hvguest.yaml"
    config.write_text("log:\n  level: info\n")
    full_env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-c", STUB, str(report), name, "--config", str(config), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=str(tmp_path),
    )
    return proc, report


def wait_report(report: Path) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while not report.exists():
        assert time.monotonic() < deadline, "the daemon never started"
        time.sleep(0.05)
    return json.loads(report.read_text())  # type: ignore[no-any-return]


def test_without_no_daemon_detaches(tmp_path: Path) -> None:
    proc, report = start(tmp_path, "hv_kvp_daemon")
    try:
        assert proc.wait(timeout=30) == 0  # the caller gets its prompt back
        info = wait_report(report)
    finally:
        proc.kill()
    try:
        assert info["pid"] != proc.pid
        assert info["sid"] == info["pid"]  # its own session: no controlling terminal
        assert info["cwd"] == "/"
        assert info["stdout"] == "/dev/null"
        argv = info["argv"]
        assert isinstance(argv, list) and argv[-2:] == ["--log-target", "journal"]
    finally:
        os.kill(int(str(info["pid"])), signal.SIGTERM)


@pytest.mark.parametrize("how", ["-n", "notify-unit"])
def test_stays_in_the_foreground(tmp_path: Path, how: str) -> None:
    args = ("-n",) if how == "-n" else ()
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify")} if how == "notify-unit" else None
    proc, report = start(tmp_path, "hypervkvpd", *args, env=env)
    try:
        info = wait_report(report)
        assert info["pid"] == proc.pid and proc.poll() is None
        assert info["cwd"] == str(tmp_path)
        assert "--log-target" not in info["argv"]  # type: ignore[operator]
    finally:
        proc.kill()
        proc.wait()
