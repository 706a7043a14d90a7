"""Hook discovery rules and the guard's bookkeeping (no processes, no ioctl)."""

from __future__ import annotations

import os
import socket

from hvguest.vss.guard import Guard
from hvguest.vss.hooks import discover


def _write(path, mode=0o755, text="#!/bin/sh\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def test_discover_order_override_and_refusals(tmp_path):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    _write(etc / "20-db")
    _write(lib / "20-db")
    _write(lib / "10-pkg")
    _write(etc / "30-writable", 0o775)
    _write(etc / "40-notexec", 0o644)
    _write(lib / "40-notexec")  # masked by the refused /etc file of the same name
    _write(etc / "50-old.dpkg-old")
    _write(etc / ".hidden")
    _write(etc / "60-x~")
    (etc / "70-dir").mkdir()
    found = discover([str(etc), str(lib), str(tmp_path / "absent")], owner_uid=os.getuid())
    assert [(h.name, os.path.basename(os.path.dirname(h.path))) for h in found.hooks] == [
        ("10-pkg", "lib"),
        ("20-db", "etc"),
    ]
    refused = {os.path.basename(r.path): r.reason for r in found.refused}
    assert refused["30-writable"].startswith("writable by group or others")
    assert refused["40-notexec"] == "not executable"
    assert refused["70-dir"] == "not a regular file"
    assert "50-old.dpkg-old" not in refused and ".hidden" not in refused


def test_discover_refuses_other_owner(tmp_path):
    _write(tmp_path / "etc" / "10-a")
    found = discover([str(tmp_path / "etc")], owner_uid=os.getuid() + 1)
    assert found.hooks == [] and "owned by uid" in found.refused[0].reason


def test_guard_bookkeeping():
    a, b = socket.socketpair()
    try:
        now = [100.0]
        guard = Guard(a, clock=lambda: now[0])
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        guard.handle({"op": "arm", "bound": 62, "labels": ["/x", "/y"], "record": "/r"}, [r1, r2])
        assert guard.deadline == 162 and guard.record == "/r"
        guard.handle({"op": "freezing", "i": 0}, [])
        assert guard.armed_and_frozen() == [0]
        guard.handle({"op": "frozen", "i": 0}, [])
        guard.handle({"op": "freezing", "i": 1}, [])
        guard.handle({"op": "not_frozen", "i": 1}, [])  # e.g. a foreign freeze: never thawed
        assert guard.armed_and_frozen() == [0]
        guard.handle({"op": "thawed", "i": 0}, [])
        assert guard.armed_and_frozen() == []
        guard.handle({"op": "frozen", "i": 7}, [])  # out of range: ignored
        guard.handle({"op": "disarm"}, [])
        assert guard.fds == [] and guard.deadline is None
        for fd in (r1, r2):
            try:
                os.fstat(fd)
                raise AssertionError("guard kept an fd open after disarm")
            except OSError:
                pass
        os.close(w1)
        os.close(w2)
    finally:
        a.close()
        b.close()


def test_guard_keeps_the_hooks_owed_across_arm_and_disarm():
    a, b = socket.socketpair()
    try:
        guard = Guard(a, clock=lambda: 0.0)
        owed = {"op": "hooks", "hooks": [["10-a", "/x/10-a"]], "argument": "freezefail",
                "env": {}, "timeout": 5, "total": 12}
        guard.handle(owed, [])
        r, w = os.pipe()
        guard.handle({"op": "arm", "bound": 62, "labels": ["/x"]}, [r])
        guard.handle({"op": "disarm"}, [])
        assert guard.owed == owed  # a freeze's end does not settle the hooks
        guard.handle({**owed, "hooks": []}, [])
        assert guard.owed is None
        guard.deliver_hooks("test")  # nothing owed: nothing runs, nothing raised
        os.close(w)
    finally:
        a.close()
        b.close()


def test_phase_budget_used_up_hook_not_run_is_owed_nothing(tmp_path):
    from hvguest.vss.hooks import HookRunner

    log = tmp_path / "log"
    for name in ("10-a", "20-b"):
        _write(tmp_path / "etc" / name, text=f'#!/bin/sh\necho "{name} $1" >> {log}\n')
    found = discover([str(tmp_path / "etc")], owner_uid=os.getuid())
    ticks = iter([0.0, 0.0, 100.0, 100.0, 100.0, 100.0])  # 20-b finds the phase over
    told = []
    runner = HookRunner(
        found.hooks, timeout=5, total_timeout=12, owner_uid=os.getuid(),
        observer=lambda hooks, arg: told.append(([h.name for h in hooks], arg)),
        clock=lambda: next(ticks, 200.0),
    )
    error = runner.freeze()
    assert error is not None and "budget of this phase is used up" in str(error)
    assert [h.name for h in runner.started] == ["10-a"]
    assert told[-1] == (["10-a"], "freezefail")
    runner.freeze_failed("test")
    assert log.read_text().split("\n")[:-1] == ["10-a freeze", "10-a freezefail"]
    assert told[-1] == ([], "freezefail")
