"""The thaw guard's start and death are seen, and no freeze happens without it.

hvguest-vssd runs from / with no PYTHON* conveniences, through an interpreter path
that the test can take away: once it is gone, a guard that dies cannot be
restarted, and the next FREEZE must be refused (HV_E_FAIL, reason given) with
nothing frozen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_vss_fixtures import FakeVssKernel, LoopSet, Writer, in_private_ns, thaw_path

pytestmark = [pytest.mark.root, pytest.mark.system]

REPO = Path(__file__).resolve().parents[2]
OK, E_FAIL, FREEZE, THAW = 0, 0x80004005, 5, 6


def wait_for(check, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def scenario(base: str) -> dict[str, object]:
    loops = LoopSet(base)
    daemon = None
    kernel = None
    try:
        fs = loops.make("a")
        interp = os.path.join(base, "bin", "python3")
        os.makedirs(os.path.dirname(interp))
        os.symlink(os.path.realpath(sys.executable), interp)
        run_dir, etc = os.path.join(base, "run"), os.path.join(base, "etc")
        os.makedirs(etc)
        kernel = FakeVssKernel(os.path.join(base, "dev"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = str(REPO)  # the daemon's own path; the guard must get it too
        log_path = os.path.join(base, "daemon.log")
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(
                [interp, "-m", "hvguest.daemons.vssd", "--dev-root", os.path.join(base, "dev"),
                 "--proc-root", loops.fake_proc(), "--run-dir", run_dir, "--etc-dir", etc,
                 "--lib-dir", os.path.join(base, "lib"), "--log-target", "stderr"],
                cwd="/", env=env, stdout=log, stderr=log,
            )
        kernel.accept()

        def guard() -> dict:
            try:
                with open(os.path.join(run_dir, "vss.json")) as f:
                    return json.load(f)["details"]["guard"]
            except (OSError, ValueError, KeyError):
                return {}

        first = wait_for(lambda: guard().get("state") == "running" and guard(), "guard start")
        os.kill(first["pid"], signal.SIGKILL)
        second = wait_for(
            lambda: guard().get("state") == "running" and guard()["pid"] != first["pid"]
            and guard(),
            "guard restart",
        )
        # Now the interpreter goes away: the next death cannot be repaired.
        os.unlink(interp)
        os.kill(second["pid"], signal.SIGKILL)
        failed = wait_for(lambda: guard().get("state") == "failed" and guard(), "guard failure")
        status, _flags = kernel.op(FREEZE)
        writer = Writer(os.path.join(fs.mountpoint, "probe"))
        not_frozen = writer.done(10)
        with open(os.path.join(run_dir, "vss.json")) as f:
            doc = json.load(f)
        with open(log_path, errors="replace") as f:
            output = f.read()
        status_cmd = subprocess.run(
            [sys.executable, "-B", "-m", "hvguest.cli.main", "vss", "status",
             "--run-dir", run_dir, "--proc-root", loops.fake_proc()],
            capture_output=True, text=True, timeout=60, cwd=str(REPO),
        )
        return {"first": first, "second": second, "failed": failed, "freeze": status,
                "not_frozen": not_frozen, "doc": doc, "output": output,
                "status": (status_cmd.returncode, status_cmd.stdout)}
    finally:
        for mounted in loops.mounted:
            thaw_path(mounted.mountpoint)
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if kernel is not None:
            kernel.close()
        loops.cleanup()


def test_guard_death_is_reported_and_freeze_refused_without_a_guard(tmp_path):
    r = in_private_ns(lambda: scenario(str(tmp_path)))
    out = str(r["output"])
    assert f"thaw guard started, pid {r['first']['pid']}" in out, out  # type: ignore[index]
    assert f"thaw guard (pid {r['first']['pid']}) died (killed by SIGKILL)" in out, out  # type: ignore[index]
    assert "cannot start the thaw guard" in str(r["failed"]["reason"])  # type: ignore[index]
    assert r["freeze"] == E_FAIL, out
    assert r["not_frozen"], "FREEZE without a guard froze the filesystem"
    doc = r["doc"]
    assert "no thaw guard" in doc["last_op"]["detail"], doc  # type: ignore[index]
    assert "thaw guard" in doc["last_error"]["message"], doc  # type: ignore[index]
    assert doc["details"]["guard_pid"] is None  # type: ignore[index]
    rc, text = r["status"]  # type: ignore[misc]
    assert rc == 2 and "thaw guard: failed" in text, text
