"""hvguest-vssd end to end on real loop filesystems, with a minimal kernel side.

The daemon runs as its own process in the scenario's private mount namespace,
registered on a SOCK_SEQPACKET socket that plays /dev/vmbus/hv_vss, with a fake
proc root listing only the test's loop mounts.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
from test_vss_fixtures import (
    FakeVssKernel,
    LoopSet,
    Writer,
    in_private_ns,
    thaw_path,
)

pytestmark = [pytest.mark.root, pytest.mark.system]

OK = 0
E_FAIL = 0x80004005
INVALIDARG = 0x80070057
HOT_BACKUP, FREEZE, THAW = 2, 5, 6


class Daemon:
    def __init__(
        self,
        loops: LoopSet,
        config: str = "",
        hooks: dict[str, str] | None = None,
        lib_hooks: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        as_installed: bool = False,
        args: list[str] | None = None,
    ) -> None:
        base = loops.base
        self.base = base
        self.run_dir = os.path.join(base, "run")
        etc = os.path.join(base, "etc")
        lib = os.path.join(base, "lib")
        for directory, scripts in ((etc, hooks or {}), (lib, lib_hooks or {})):
            os.makedirs(os.path.join(directory, "vss.d"), exist_ok=True)
            for name, text in scripts.items():
                path = os.path.join(directory, "vss.d", name)
                with open(path, "w") as f:
                    f.write(text)
                os.chmod(path, 0o755)
        cfg = os.path.join(etc, "hvguest.yaml")
        with open(cfg, "w") as f:
            f.write(config)
        dev = os.path.join(base, "dev")
        self.kernel = FakeVssKernel(dev)
        self.log_path = os.path.join(base, "daemon.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hvguest.daemons.vssd",
                "--dev-root",
                dev,
                "--proc-root",
                loops.fake_proc(),
                "--etc-dir",
                etc,
                "--lib-dir",
                lib,
                "--run-dir",
                self.run_dir,
                "--config",
                cfg,
                "--log-target",
                "stderr",
                "--debug",
                *(args or []),
            ],
            stdout=self.log,
            stderr=self.log,
            env=self._env(env, as_installed),
            # As systemd starts it: from /, bytecode writing not turned off.
            cwd="/" if as_installed else None,
        )
        self.kernel.accept()

    @staticmethod
    def _env(extra: dict[str, str] | None, as_installed: bool) -> dict[str, str]:
        env = {**os.environ, **(extra or {})}
        if as_installed:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def op(self, op: int, flags: int = 0, timeout: float = 60.0) -> tuple[int, int]:
        return self.kernel.op(op, flags, timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def state(self) -> dict:
        path = os.path.join(self.run_dir, "vss.json")
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)  # published just after registration
        with open(path) as f:
            return json.load(f)

    def output(self) -> str:
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.kernel.close()
        self.log.close()


def _scenario(tmp_path, body, n=2, **daemon_kw):
    def child():
        loops = LoopSet(str(tmp_path))
        daemon = None
        try:
            fss = [loops.make(chr(ord("a") + i)) for i in range(n)]
            daemon = Daemon(loops, **daemon_kw)
            return body(loops, fss, daemon)
        finally:
            if daemon is not None:
                daemon.stop()
            loops.cleanup()

    return in_private_ns(child)


def test_freeze_thaw_cycle_and_status(tmp_path):
    def body(loops, fss, d):
        hb = d.op(HOT_BACKUP)
        frozen = d.op(FREEZE)
        writer = Writer(os.path.join(fss[0].mountpoint, "f"))
        blocked = not writer.done(1.0)
        thawed = d.op(THAW)
        finished = writer.done(10)
        time.sleep(0.3)
        return hb, frozen, blocked, thawed, finished, d.state(), d.alive()

    hb, frozen, blocked, thawed, finished, state, alive = _scenario(tmp_path, body)
    assert hb == (OK, 5)  # VSS_HBU_NO_AUTO_RECOVERY in bytes 8-11
    assert frozen[0] == OK and thawed[0] == OK
    assert blocked and finished and alive
    last = state["details"]["last_freeze"]
    assert last["ok"] and state["details"]["frozen"] is False
    assert {m["state"] for m in last["mounts"]} == {"thawed"}
    assert last["thaw"]["why"] == "host"


def test_bad_requests_get_failure_replies_and_daemon_keeps_serving(tmp_path):
    def body(loops, fss, d):
        out = {}
        out["thaw_without_freeze"] = d.op(THAW)[0]
        out["unknown_op"] = d.op(99)[0]
        short = d.kernel.request(bytes([FREEZE]) + bytes(3))
        out["short_len"] = len(short)
        out["short"] = struct.unpack_from("<I", short)[0]
        out["freeze"] = d.op(FREEZE)[0]
        out["double_freeze"] = d.op(FREEZE)[0]
        out["thaw"] = d.op(THAW)[0]
        out["thaw_again"] = d.op(THAW)[0]
        out["alive"] = d.alive()
        out["freeze_after"] = d.op(FREEZE)[0]
        out["thaw_after"] = d.op(THAW)[0]
        out["unfrozen"] = [not thaw_path(fs.mountpoint) for fs in fss]
        return out

    out = _scenario(tmp_path, body)
    assert out["thaw_without_freeze"] == E_FAIL
    assert out["unknown_op"] == INVALIDARG
    assert out["short_len"] == 12 and out["short"] == INVALIDARG
    assert out["freeze"] == OK and out["double_freeze"] == E_FAIL
    assert out["thaw"] == OK and out["thaw_again"] == E_FAIL
    assert out["alive"] and out["freeze_after"] == OK and out["thaw_after"] == OK
    assert all(out["unfrozen"])


def test_sigkill_while_frozen_is_thawed_by_the_guard(tmp_path):
    def body(loops, fss, d):
        assert d.op(FREEZE)[0] == OK
        writer = Writer(os.path.join(fss[1].mountpoint, "f"))
        blocked = not writer.done(0.5)
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        finished = writer.done(20)
        seconds = time.monotonic() - t0
        still = [thaw_path(fs.mountpoint) for fs in fss]
        return blocked, finished, seconds, still, d.output()

    blocked, finished, seconds, still, output = _scenario(
        tmp_path, body, config="vss:\n  auto_thaw: 30\n"
    )
    assert blocked
    assert finished, output
    assert seconds < 30  # within the auto-thaw bound; in practice at once
    assert still == [False, False]
    assert "thaw guard: thawed" in output
    assert not os.path.exists(os.path.join(str(tmp_path), "run", "vss-frozen.json"))


def test_auto_thaw_when_thaw_never_comes(tmp_path):
    def body(loops, fss, d):
        assert d.op(FREEZE)[0] == OK
        writer = Writer(os.path.join(fss[0].mountpoint, "f"))
        finished = writer.done(15)
        late = d.op(THAW)[0]
        time.sleep(0.3)  # the state file is written after the reply
        return finished, late, d.alive(), d.state()

    finished, late, alive, state = _scenario(tmp_path, body, config="vss:\n  auto_thaw: 2\n")
    assert finished and alive
    assert late == E_FAIL
    assert state["details"]["last_freeze"]["thaw"]["why"] == "auto"
    assert "auto-thaw" in state["last_op"]["detail"]


HOOK = """#!/bin/sh
echo "{name} $1 $HVGUEST_VSS_OPERATION" >> {log}
{extra}
"""


def _hook(base, name, extra=""):
    return HOOK.format(name=name, log=os.path.join(base, "hooks.log"), extra=extra)


def _hook_log(base):
    try:
        with open(os.path.join(base, "hooks.log")) as f:
            return [line.split()[:2] for line in f]
    except FileNotFoundError:
        return []


def test_hooks_run_in_order_with_arguments(tmp_path):
    base = str(tmp_path)
    hooks = {
        "10-first": _hook(base, "10-first"),
        "20-second": _hook(base, "20-second"),
        "README": "not a hook",
        "30-third.dpkg-old": _hook(base, "old"),
    }
    lib_hooks = {"20-second": _hook(base, "packaged-20"), "15-packaged": _hook(base, "15-pkg")}

    def body(loops, fss, d):
        assert d.op(FREEZE)[0] == OK
        assert d.op(THAW)[0] == OK
        time.sleep(0.2)
        return _hook_log(base)

    log = _scenario(tmp_path, body, hooks=hooks, lib_hooks=lib_hooks)
    assert log == [
        ["10-first", "freeze"],
        ["15-pkg", "freeze"],
        ["20-second", "freeze"],
        ["20-second", "thaw"],
        ["15-pkg", "thaw"],
        ["10-first", "thaw"],
    ]


def test_failing_hook_fails_freeze_and_unwinds(tmp_path):
    base = str(tmp_path)
    hooks = {
        "10-ok": _hook(base, "10-ok"),
        "20-bad": _hook(base, "20-bad", "echo 'database unreachable' >&2; exit 3"),
        "30-never": _hook(base, "30-never"),
    }

    def body(loops, fss, d):
        status = d.op(FREEZE)[0]
        unfrozen = [not thaw_path(fs.mountpoint) for fs in fss]
        time.sleep(0.2)
        return status, unfrozen, _hook_log(base), d.state(), d.alive()

    status, unfrozen, log, state, alive = _scenario(tmp_path, body, hooks=hooks)
    assert status == E_FAIL and all(unfrozen) and alive
    assert log == [
        ["10-ok", "freeze"],
        ["20-bad", "freeze"],
        ["20-bad", "freezefail"],
        ["10-ok", "freezefail"],
    ]
    reason = state["details"]["last_freeze"]["reason"]
    assert "20-bad" in reason and "exited with 3" in reason and "database unreachable" in reason


def test_hook_timeout_kills_process_group(tmp_path):
    base = str(tmp_path)
    pidfile = os.path.join(base, "bg.pid")
    hooks = {"10-slow": _hook(base, "10-slow", f"sleep 60 & echo $! > {pidfile}; wait")}

    def body(loops, fss, d):
        t0 = time.monotonic()
        status = d.op(FREEZE)[0]
        seconds = time.monotonic() - t0
        with open(pidfile) as f:
            bg = int(f.read())
        time.sleep(0.3)
        bg_alive = os.path.exists(f"/proc/{bg}") and "Z" not in open(f"/proc/{bg}/stat").read()
        return status, seconds, bg_alive, d.state()

    status, seconds, bg_alive, state = _scenario(
        tmp_path, body, hooks=hooks, config="vss:\n  hook_timeout: 1\n"
    )
    assert status == E_FAIL and seconds < 10 and not bg_alive
    assert "timed out after 1 s" in state["details"]["last_freeze"]["reason"]


def test_unsafe_hook_is_refused(tmp_path):
    base = str(tmp_path)
    hooks = {"10-open": _hook(base, "10-open")}

    def body(loops, fss, d):
        os.chmod(os.path.join(base, "etc", "vss.d", "10-open"), 0o777)
        assert d.op(FREEZE)[0] == OK
        assert d.op(THAW)[0] == OK
        time.sleep(0.2)
        return _hook_log(base), d.output()

    log, output = _scenario(tmp_path, body, hooks=hooks)
    assert log == []
    assert "10-open refused: writable by group or others" in output


def _ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hvguest.cli.main", "vss", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_emergency_thaw_without_guard(tmp_path):
    """Daemon and guard both gone (guard disabled here): 'hvguestctl vss thaw' uses the
    freeze record, thaws only what hvguest froze and leaves a foreign freeze alone."""

    def body(loops, fss, d):
        from test_vss_fixtures import freeze_path

        freeze_path(fss[2].mountpoint)  # someone else's freeze, skipped by config
        try:
            assert d.op(FREEZE)[0] == OK
            writer = Writer(os.path.join(fss[0].mountpoint, "f"))
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            still_blocked = not writer.done(1.0)
            proc = os.path.join(loops.base, "proc")
            status = _ctl("status", "--run-dir", d.run_dir, "--proc-root", proc)
            thaw = _ctl("thaw", "--run-dir", d.run_dir, "--proc-root", proc)
            finished = writer.done(10)
            foreign_still_frozen = thaw_path(fss[2].mountpoint)
            again = _ctl("thaw", "--if-frozen", "--run-dir", d.run_dir, "--proc-root", proc)
        finally:
            for fs in fss:
                thaw_path(fs.mountpoint)
        return still_blocked, status, thaw, finished, foreign_still_frozen, again

    still_blocked, status, thaw, finished, foreign, again = _scenario(
        tmp_path, body, n=3, config="vss:\n  guard: false\n  foreign_freeze: skip\n"
    )
    assert still_blocked
    assert status.returncode == 2 and "died during a freeze" in status.stdout
    assert thaw.returncode == 0, thaw.stderr
    assert thaw.stdout.count(": thawed") == 2 and "left alone (foreign" in thaw.stdout
    assert finished and foreign
    assert again.returncode == 0 and again.stdout == ""


def test_plan_and_status_commands(tmp_path):
    def body(loops, fss, d):
        proc = os.path.join(loops.base, "proc")
        plan = _ctl(
            "plan",
            "--proc-root",
            proc,
            "--etc-dir",
            os.path.join(loops.base, "etc"),
            "--lib-dir",
            os.path.join(loops.base, "lib"),
        )
        d.op(FREEZE)
        d.op(THAW)
        time.sleep(0.2)
        status = _ctl("status", "--run-dir", d.run_dir)
        return plan, status

    plan, status = _scenario(tmp_path, body, config="vss:\n  exclude: ['*/mnt/b']\n")
    assert plan.returncode == 0, plan.stderr
    assert "1. " in plan.stdout and "/mnt/a (ext4" in plan.stdout
    assert "excluded by the configuration" in plan.stdout
    assert status.returncode == 0, status.stdout + status.stderr
    assert "frozen now: no" in status.stdout and "last freeze:" in status.stdout
    assert "thawed" in status.stdout and "/mnt/a" in status.stdout


def test_thaw_reply_does_not_wait_for_thaw_hooks(tmp_path):
    base = str(tmp_path)
    hooks = {"10-slow-thaw": _hook(base, "10-slow-thaw", '[ "$1" = thaw ] && sleep 3; exit 0')}

    def body(loops, fss, d):
        assert d.op(FREEZE)[0] == OK
        t0 = time.monotonic()
        status = d.op(THAW)[0]
        seconds = time.monotonic() - t0
        time.sleep(3.5)
        return status, seconds, _hook_log(base)

    status, seconds, log = _scenario(tmp_path, body, hooks=hooks)
    assert status == OK and seconds < 1.5
    assert log == [["10-slow-thaw", "freeze"], ["10-slow-thaw", "thaw"]]


def test_sigterm_while_frozen_thaws_and_exits(tmp_path):
    def body(loops, fss, d):
        assert d.op(FREEZE)[0] == OK
        writer = Writer(os.path.join(fss[0].mountpoint, "f"))
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(20)
        finished = writer.done(10)
        return rc, finished, [thaw_path(fs.mountpoint) for fs in fss], d.output()

    rc, finished, still, output = _scenario(tmp_path, body)
    assert rc == 0 and finished and still == [False, False]
    assert "stopping while frozen: thawed" in output


def test_dead_guard_is_restarted_before_the_next_freeze(tmp_path):
    def body(loops, fss, d):
        first = d.state()["details"]["guard_pid"]
        os.kill(first, signal.SIGKILL)
        time.sleep(0.3)
        assert d.op(FREEZE)[0] == OK
        writer = Writer(os.path.join(fss[0].mountpoint, "f"))
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        finished = writer.done(20)
        return first, finished, [thaw_path(fs.mountpoint) for fs in fss], d.output()

    first, finished, still, output = _scenario(tmp_path, body)
    assert first and finished and still == [False, False]
    assert "thaw guard: thawed" in output
