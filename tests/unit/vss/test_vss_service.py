"""VssService wiring with a fake device, fake ioctl and fake mount table."""

from __future__ import annotations

import logging
import os
import struct

import pytest
from test_vss_engine import FakeOps  # type: ignore[import-not-found]

from hvguest import log as hvlog
from hvguest.daemon import Runtime
from hvguest.daemons.vssd import VssService  # noqa: I001
from hvguest.paths import Paths
from hvguest.state import StatePublisher
from hvguest.transport.base import Transport
from hvguest.vss.freeze import NullObserver
from hvguest.vss.settings import VssSettings

MOUNTINFO = (
    "27 1 250:101 / / rw - ext4 /dev/vda1 rw\n"
    "28 27 250:102 / /home rw - xfs /dev/vda2 rw\n"
    "29 27 0:21 / /proc rw - proc proc rw\n"
)


class FakeTransport:
    """A Transport whose "device" is a pipe: a byte in it is a message ready."""

    path = "/dev/vmbus/hv_vss"
    version = "Hyper-V VSS protocol 7"

    def __init__(self):
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        self.is_open = True
        self.inbox: list[bytes] = []
        self.sent: list[bytes] = []

    def open(self):
        self.is_open = True
        return self

    def fileno(self):
        return self.rfd

    def read_ready(self):
        os.read(self.rfd, 1)
        return self.inbox.pop(0) if self.inbox else b""

    def read_packet(self, timeout=0.0):
        return self.read_ready()

    def write_packet(self, data):
        self.sent.append(data)

    def close(self):
        self.is_open = False

    def deliver(self, message: bytes) -> None:
        self.inbox.append(message)
        os.write(self.wfd, b"x")

    def dispose(self):
        os.close(self.rfd)
        os.close(self.wfd)


assert isinstance(FakeTransport(), Transport)


@pytest.fixture
def env(tmp_path):
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "sys").mkdir()
    paths = Paths(
        proc=str(tmp_path / "proc"),
        sys=str(tmp_path / "sys"),
        run=str(tmp_path / "run"),
        etc=str(tmp_path / "etc"),
        lib=str(tmp_path / "lib"),
    )
    now = [1000.0]
    runtime = Runtime("test", clock=lambda: now[0])
    transport = FakeTransport()
    ops = FakeOps()
    settings = VssSettings(auto_thaw=30, guard=False, hooks=False)
    service = VssService(
        paths,
        settings,
        runtime,
        transport=transport,
        ops=ops,
        observer=NullObserver(),
        state=StatePublisher("vss", paths),
        clock=lambda: now[0],
    )
    service.start()
    yield service, transport, ops, now, runtime, paths
    runtime.close()
    transport.dispose()


def _send(service, transport, op):
    transport.deliver(bytes([op]) + bytes(11))
    service.runtime.run_once(0)
    return struct.unpack_from("<I", transport.sent[-1])[0]


def test_freeze_holds_logging_and_state_until_thaw(env, caplog):
    service, transport, ops, now, runtime, paths = env
    buffer = hvlog.setup_logging("test", target="stderr")
    try:
        assert _send(service, transport, 5) == 0
        assert ops.frozen == {"/", "/home"}
        assert ops.calls[:2] == [("freeze", "/home"), ("freeze", "/")]
        assert buffer.held and service.state.held
        assert os.path.exists(os.path.join(paths.run, "vss-frozen.json"))
        logging.getLogger("x").warning("while frozen")
        assert _send(service, transport, 6) == 0
        assert not buffer.held and not service.state.held and not ops.frozen
        assert not os.path.exists(os.path.join(paths.run, "vss-frozen.json"))
        doc = service.state.doc
        assert doc["details"]["last_freeze"]["ok"] and doc["state"] == "ready"
    finally:
        hvlog.flush()
        logging.getLogger().removeHandler(buffer)


def test_auto_thaw_timer(env):
    service, transport, ops, now, runtime, paths = env
    assert _send(service, transport, 5) == 0
    now[0] += 29
    runtime.run_once(0)
    assert ops.frozen
    now[0] += 2
    runtime.run_once(0)
    assert not ops.frozen
    assert service.state.doc["details"]["last_freeze"]["thaw"]["why"] == "auto"
    assert _send(service, transport, 6) == 0x80004005
    hvlog.flush()


def test_stop_while_frozen_thaws(env):
    service, transport, ops, now, runtime, paths = env
    _send(service, transport, 5)
    service.stop()
    assert not ops.frozen and service.state.doc["state"] == "stopped"
    hvlog.flush()


def test_reply_write_failure_after_freeze_thaws(env):
    from hvguest.errors import TransportError

    service, transport, ops, now, runtime, paths = env

    def broken(data):
        raise TransportError("write failed: Invalid argument")

    reopened = []
    transport.write_packet = broken
    transport.open = lambda: reopened.append(1)
    transport.deliver(bytes([5]) + bytes(11))
    runtime.run_once(0)
    assert not ops.frozen and reopened == []  # thawed at once, re-registered after 0.1 s
    now[0] += 0.1
    runtime.run_once(0)
    assert reopened == [1]
    hvlog.flush()


def test_hot_backup_reports_capability(env):
    service, transport, ops, now, runtime, paths = env
    assert _send(service, transport, 2) == 0
    assert transport.sent[-1][8:] == struct.pack("<I", 5)
    assert "2 filesystem(s) to freeze" in service.state.doc["last_op"]["detail"]


def test_unexpected_error_thaws_and_releases_logging(env):
    service, transport, ops, now, runtime, paths = env
    buffer = hvlog.setup_logging("test", target="stderr")
    real_freeze = ops.freeze

    def flaky(fd):
        if ops.paths[fd] == "/":
            raise RuntimeError("bug")
        real_freeze(fd)

    ops.freeze = flaky
    try:
        assert _send(service, transport, 5) == 0x80004005
        assert not ops.frozen and not buffer.held and not service.state.held
        assert "internal error" in service.state.doc["details"]["last_freeze"]["reason"]
        assert _send(service, transport, 6) == 0x80004005  # nothing frozen
    finally:
        hvlog.flush()
        logging.getLogger().removeHandler(buffer)


def test_apply_settings_changes_the_next_plan(env):
    service, transport, ops, now, runtime, paths = env
    service.apply_settings(VssSettings(auto_thaw=10, guard=False, hooks=False, exclude=["/home"]))
    assert _send(service, transport, 5) == 0
    assert ops.frozen == {"/"}
    assert service.role.deadline == now[0] + 10
    assert _send(service, transport, 6) == 0
    hvlog.flush()


def test_record_not_rewritten_while_its_filesystem_is_frozen(env):
    """The run dir lies on a planned filesystem (per mountinfo): the record written
    before the freeze stays as is, and nothing is written while frozen."""
    service, transport, ops, now, runtime, paths = env
    proc_mountinfo = os.path.join(paths.proc, "self", "mountinfo")
    run_parent = os.path.dirname(paths.run)
    with open(proc_mountinfo, "a") as f:
        f.write(f"30 27 250:102 / {run_parent} rw - xfs /dev/vda2 rw\n")
    assert _send(service, transport, 5) == 0
    with open(os.path.join(paths.run, "vss-frozen.json")) as f:
        record = f.read()
    assert '"state"' not in record  # the planned record, not refined
    assert _send(service, transport, 6) == 0
    hvlog.flush()


def test_record_refined_when_run_dir_is_elsewhere(env):
    service, transport, ops, now, runtime, paths = env
    proc_mountinfo = os.path.join(paths.proc, "self", "mountinfo")
    with open(proc_mountinfo, "a") as f:  # the run dir on a tmpfs, as /run normally is
        f.write(f"30 27 0:999 / {os.path.dirname(paths.run)} rw - tmpfs tmpfs rw\n")
    assert _send(service, transport, 5) == 0
    with open(os.path.join(paths.run, "vss-frozen.json")) as f:
        record = f.read()
    assert '"state": "frozen"' in record
    assert _send(service, transport, 6) == 0
    hvlog.flush()


def _fail_reads(transport, reopen):
    from hvguest.errors import TransportError

    def broken():
        raise TransportError("read failed: Bad file descriptor")

    transport.read_ready = broken
    transport.open = reopen
    transport.deliver(b"")


def test_device_gone_exits_cleanly(env, tmp_path):
    from hvguest.errors import TransportError

    service, transport, ops, now, runtime, paths = env
    transport.path = str(tmp_path / "dev" / "vmbus" / "hv_vss")  # does not exist

    def reopen():
        raise TransportError("device absent")

    _fail_reads(transport, reopen)
    runtime.run_once(0)
    now[0] += 0.1  # the first re-open waits for the back-off
    runtime.run_once(0)
    # The host withdrew the service: stop with status 0, not as a failure.
    assert runtime._exit_code == 0


def test_device_busy_is_retried_with_backoff(env, tmp_path):
    from hvguest.errors import TransportError

    service, transport, ops, now, runtime, paths = env
    device = tmp_path / "hv_vss"
    device.write_bytes(b"")
    transport.path = str(device)
    attempts = []

    def reopen():
        attempts.append(now[0])
        if len(attempts) < 3:
            raise TransportError("busy")

    _fail_reads(transport, reopen)
    runtime.run_once(0)
    assert attempts == [] and runtime._exit_code is None  # not at once: 0.1 s later
    now[0] += 0.1
    runtime.run_once(0)
    assert len(attempts) == 1 and runtime._exit_code is None
    assert service.state.doc["last_error"]["message"] == "busy"
    for _ in range(2):
        now[0] += 60
        runtime.run_once(0)
    assert len(attempts) == 3 and runtime._exit_code is None
    # Registered again: the channel runner clears the error it recorded.
    assert service.state.doc["last_error"] is None and service.state.doc["state"] == "ready"


class _OwedRecorder:
    """Stands in for the guard's end of the socket: what it was told is owed."""

    pid = None
    problems: list[str] = []

    def __init__(self):
        self.told: list[tuple[list[str], str]] = []

    def hooks_owed(self, hooks, argument, env, timeout, total):
        self.told.append(([h.name for h in hooks], argument))

    # An armed guard, as far as the daemon can tell.
    status = {"state": "ready"}

    def ensure_running(self):
        return None

    def alive(self):
        return True

    def close(self):
        pass


def _with_hook(service, paths, tmp_path):
    from dataclasses import replace

    log = tmp_path / "hooks.log"
    hook = os.path.join(paths.etc, "vss.d", "10-a")
    os.makedirs(os.path.dirname(hook))
    with open(hook, "w") as f:
        f.write(f'#!/bin/sh\necho "10-a $1" >> {log}\n')
    os.chmod(hook, 0o755)
    service.work.settings = replace(service.settings, hooks=True)
    service.work.guard = _OwedRecorder()
    return log


def test_guard_is_told_thaw_is_owed_only_once_frozen(env, tmp_path):
    service, transport, ops, now, runtime, paths = env
    log = _with_hook(service, paths, tmp_path)
    assert _send(service, transport, 5) == 0
    assert service.work.guard.told == [(["10-a"], "freezefail"), (["10-a"], "thaw")]
    assert _send(service, transport, 6) == 0
    assert service.work.guard.told[-1] == ([], "thaw")
    assert log.read_text().split() == ["10-a", "freeze", "10-a", "thaw"]
    hvlog.flush()


def test_internal_error_during_freeze_still_gives_freezefail(env, tmp_path):
    service, transport, ops, now, runtime, paths = env
    log = _with_hook(service, paths, tmp_path)

    def broken(plan):
        raise RuntimeError("bug")

    service.engine.freeze = broken
    assert _send(service, transport, 5) == 0x80004005
    assert log.read_text().split() == ["10-a", "freeze", "10-a", "freezefail"]
    assert service.work.guard.told[-1] == ([], "freezefail")
    hvlog.flush()


def test_daemon_stop_thaws_before_the_device_closes(env):
    """The runtime's stop path (SIGTERM): the thaw comes first, the device is
    closed after, and the state file says stopped."""
    service, transport, ops, now, runtime, paths = env
    assert _send(service, transport, 5) == 0
    seen = []
    real_thaw = ops.thaw

    def thaw(fd):
        seen.append(transport.is_open)
        real_thaw(fd)

    ops.thaw = thaw
    runtime.stop(0)
    assert runtime.run() == 0
    assert not ops.frozen and seen and all(seen)
    assert not transport.is_open
    assert service.state.doc["state"] == "stopped"
    assert service.state.doc["details"]["last_freeze"]["thaw"]["why"] == "stop"
    hvlog.flush()


def test_read_failure_while_frozen_thaws_at_once(env):
    service, transport, ops, now, runtime, paths = env
    assert _send(service, transport, 5) == 0
    _fail_reads(transport, lambda: None)
    runtime.run_once(0)
    assert not ops.frozen and not service.state.held
    assert service.role.state.name == "IDLE"
    hvlog.flush()


def test_replies_and_their_log_lines_come_from_the_role(env, caplog):
    service, transport, ops, now, runtime, paths = env
    caplog.set_level(logging.INFO)
    assert _send(service, transport, 6) == 0x80004005
    (record,) = [r for r in caplog.records if "THAW ->" in r.getMessage()]
    assert record.getMessage() == "THAW -> HV_E_FAIL: THAW without a FREEZE: nothing is frozen"
    assert record.levelno == logging.WARNING and record.HVGUEST_VSS_OP == "THAW"
    assert service.state.doc["last_op"]["result"] == "HV_E_FAIL"


def test_a_guard_that_failed_to_start_is_tried_again(tmp_path, caplog):
    """A guard that could not start (here: its interpreter is missing; on a loaded
    machine: too slow to say ready) is tried again on a timer, not only at the next
    FREEZE; once it runs, nothing more is scheduled."""
    import sys

    from hvguest.daemons.vssd import GUARD_RETRY

    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "mountinfo").write_text(MOUNTINFO)
    paths = Paths(proc=str(tmp_path / "proc"), sys=str(tmp_path / "sys"),
                  run=str(tmp_path / "run"), etc=str(tmp_path / "etc"),
                  lib=str(tmp_path / "lib"))
    now = [1000.0]
    runtime = Runtime("test", clock=lambda: now[0])
    transport = FakeTransport()
    service = VssService(paths, VssSettings(auto_thaw=30, guard=True, hooks=False), runtime,
                         transport=transport, ops=FakeOps(),
                         state=StatePublisher("vss", paths), clock=lambda: now[0])
    guard = service.guard
    assert guard is not None
    guard.python = str(tmp_path / "no-such-python3")
    try:
        service.start()
        assert guard.status["state"] == "failed" and not guard.alive()
        now[0] += GUARD_RETRY - 1
        runtime.run_once(0)
        assert guard.status["state"] == "failed"  # not yet
        now[0] += 1
        runtime.run_once(0)
        assert guard.status["state"] == "failed"  # tried again, failed again
        assert caplog.text.count("cannot start the thaw guard") == 2
        guard.python = sys.executable
        now[0] += GUARD_RETRY
        runtime.run_once(0)
        assert guard.status["state"] == "running" and guard.alive()
        assert service._guard_retry is None
    finally:
        service.stop()
        runtime.close()
        transport.dispose()
