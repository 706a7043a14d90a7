"""Pre-shutdown hooks: order, budgets, ownership and mode checks, CLI."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import pytest

from hvguest.cli.main import main as hvguestctl
from hvguest.command import CommandResult, Runner
from hvguest.paths import Paths
from hvguest.shutdown import hooks as shutdown


def _hook(paths: Paths, name: str, body: str, mode: int = 0o755) -> str:
    d = shutdown.hook_dir(paths)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, mode)
    return path


@pytest.fixture
def paths(machine: Callable[..., Paths]) -> Paths:
    return machine()


def test_hooks_run_in_name_order_with_action(paths: Paths) -> None:
    log = os.path.join(paths.run, "order.log")
    os.makedirs(paths.run, exist_ok=True)
    for name in ("20-second", "10-first", "30-third"):
        _hook(paths, name, f'echo "{name} $1 $HVGUEST_SHUTDOWN_ACTION" >> {log}')
    _hook(paths, "15-editor-backup~", "exit 1")
    _hook(paths, ".hidden", "exit 1")
    results = shutdown.run_hooks(paths, action="reboot", owner_uid=os.getuid())
    assert [r.hook for r in results] == ["10-first", "20-second", "30-third"]
    assert all(r.result == "ok" for r in results)
    with open(log) as f:
        assert f.read().splitlines() == ["10-first reboot reboot", "20-second reboot reboot",
                                          "30-third reboot reboot"]


def test_failure_does_not_stop_later_hooks(paths: Paths) -> None:
    _hook(paths, "10-fails", "echo broken >&2; exit 3")
    _hook(paths, "20-ok", "true")
    results = shutdown.run_hooks(paths, owner_uid=os.getuid())
    assert [(r.hook, r.result, r.returncode) for r in results] == [
        ("10-fails", "failed", 3), ("20-ok", "ok", 0)]
    assert results[0].detail == "broken"


def test_per_hook_budget_kills_the_whole_session(paths: Paths) -> None:
    marker = os.path.join(paths.run, "child-survived")
    _hook(paths, "10-hangs", f"(sleep 3; touch {marker}) & sleep 30")
    _hook(paths, "20-ok", "true")
    start = time.monotonic()
    results = shutdown.run_hooks(paths, hook_timeout=0.5, owner_uid=os.getuid())
    assert time.monotonic() - start < 5
    assert [r.result for r in results] == ["timeout", "ok"]
    time.sleep(3.5)
    assert not os.path.exists(marker)


def test_total_budget_skips_the_rest(paths: Paths) -> None:
    _hook(paths, "10-slow", "sleep 30")
    _hook(paths, "20-never", "true")
    # The total includes each hook's kill and last reads (2 s): 10-slow gets 1 s.
    results = shutdown.run_hooks(paths, hook_timeout=10, total_timeout=3,
                                 owner_uid=os.getuid())
    assert [r.result for r in results] == ["timeout", "skipped"]
    assert "total budget" in results[1].detail


def test_unsafe_hooks_are_skipped(paths: Paths) -> None:
    _hook(paths, "10-world-writable", "true", 0o757)
    _hook(paths, "20-not-executable", "true", 0o644)
    _hook(paths, "30-ok", "true")
    hooks = shutdown.list_hooks(paths, owner_uid=os.getuid())
    assert [(h.name, h.usable) for h in hooks] == [
        ("10-world-writable", False), ("20-not-executable", False), ("30-ok", True)]
    assert "writable" in hooks[0].problem and "executable" in hooks[1].problem
    other = shutdown.list_hooks(paths, owner_uid=os.getuid() + 1)
    assert all(not h.usable and "not root" in h.problem for h in other)
    results = shutdown.run_hooks(paths, owner_uid=os.getuid())
    assert [r.result for r in results] == ["skipped", "skipped", "ok"]


def test_detect_action() -> None:
    def jobs(out: str, rc: int = 0) -> Runner:
        return lambda cmd, timeout: CommandResult(rc, out)

    assert shutdown.detect_action(jobs("12 reboot.target start waiting\n")) == "reboot"
    assert shutdown.detect_action(jobs("3 poweroff.target start waiting\n")) == "poweroff"
    assert shutdown.detect_action(jobs("", 1)) == "poweroff"


def test_no_hook_dir(paths: Paths) -> None:
    assert shutdown.list_hooks(paths) == []
    assert shutdown.run_hooks(paths) == []


@pytest.mark.root
def test_cli_run_records_results(paths: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    root = os.path.dirname(paths.sys)
    _hook(paths, "10-ok", "echo saved")
    assert hvguestctl(["shutdown-hooks", "list", "--root-dir", root]) == 0
    assert "10-ok" in capsys.readouterr().out
    assert hvguestctl(["shutdown-hooks", "run", "--action", "reboot", "--root-dir", root]) == 0
    assert "10-ok" in capsys.readouterr().out
    doc = shutdown.load_results(paths)
    assert doc is not None and doc["action"] == "reboot"
    with open(os.path.join(paths.run, shutdown.RESULT_FILE)) as f:
        assert json.load(f)["results"][0]["result"] == "ok"
    _hook(paths, "20-bad", "exit 1")
    assert hvguestctl(["shutdown-hooks", "run", "--root-dir", root]) == 2
