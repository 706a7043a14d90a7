"""Hooks cannot starve hvguest-vssd, and every hook that got ``freeze`` gets its
``thaw``/``freezefail`` even when the daemon dies (real daemon, loop filesystems)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time

import pytest
from test_vss_daemon import FREEZE, OK, THAW, _hook, _hook_log, _scenario

pytestmark = [pytest.mark.root, pytest.mark.system]

WATCHDOG = 2.0  # seconds: WatchdogSec of this test's "unit"


def _wait_for(predicate, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


class NotifyListener:
    """The service manager's end of $NOTIFY_SOCKET: when each WATCHDOG=1 came."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.pings: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in data.split(b"\n"):
                self.pings.append(time.monotonic())

    def close(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        return self.pings


def test_hooks_longer_than_the_watchdog_neither_kill_the_daemon_nor_lose_a_thaw(tmp_path):
    base = str(tmp_path)
    notify_path = os.path.join(base, "notify")
    hooks = {
        "10-slow-freeze": _hook(base, "10-slow-freeze", 'if [ "$1" = freeze ]; then sleep 5; fi'),
        "20-slow-thaw": _hook(base, "20-slow-thaw", 'if [ "$1" = thaw ]; then sleep 5; fi'),
    }
    env = {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": str(int(WATCHDOG * 1e6))}
    listener = NotifyListener(notify_path)

    def body(loops, fss, d):
        start = time.monotonic()
        frozen = d.op(FREEZE)[0]
        thawed = d.op(THAW)[0]
        complete = _wait_for(lambda: len(_hook_log(base)) == 4, 30)
        return start, time.monotonic(), frozen, thawed, complete, _hook_log(base), d.alive()

    try:
        start, end, frozen, thawed, complete, log, alive = _scenario(
            tmp_path, body, hooks=hooks, env=env,
            config="vss:\n  hook_timeout: 8\n",
        )
    finally:
        pings = listener.close()
    assert frozen == OK and thawed == OK and alive and complete
    assert log == [
        ["10-slow-freeze", "freeze"],
        ["20-slow-thaw", "freeze"],
        ["20-slow-thaw", "thaw"],
        ["10-slow-freeze", "thaw"],
    ]
    # What systemd's watchdog checks: never WatchdogSec without a ping while the
    # daemon works (from the FREEZE request until the last thaw hook ended).
    during = [start] + [t for t in pings if start <= t <= end] + [end]
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    print(f"longest watchdog silence {max(gaps):.2f} s over {end - start:.1f} s")
    assert max(gaps) < WATCHDOG, f"longest watchdog silence {max(gaps):.1f} s"


def test_sigkill_after_freeze_hooks_still_get_thaw(tmp_path):
    base = str(tmp_path)
    hooks = {"10-a": _hook(base, "10-a"), "20-b": _hook(base, "20-b")}

    def body(loops, fss, d):
        assert d.op(FREEZE)[0] == OK
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        complete = _wait_for(lambda: len(_hook_log(base)) == 4, 30)
        return complete, _hook_log(base), d.output()

    complete, log, output = _scenario(tmp_path, body, hooks=hooks, as_installed=True)
    assert complete, output
    assert log == [["10-a", "freeze"], ["20-b", "freeze"], ["20-b", "thaw"], ["10-a", "thaw"]]
    assert "thaw guard: ran hook 20-b thaw" in output


def test_sigkill_during_freeze_hooks_gives_each_started_hook_freezefail(tmp_path):
    base = str(tmp_path)
    pidfile = os.path.join(base, "slow.pid")
    hooks = {
        "10-a": _hook(base, "10-a"),
        "20-slow": _hook(
            base, "20-slow", f'if [ "$1" = freeze ]; then echo $$ > {pidfile}; sleep 60; fi'
        ),
        "30-never": _hook(base, "30-never"),
    }

    def body(loops, fss, d):
        d.kernel.conn.send(bytes([FREEZE]) + bytes(7) + struct.pack("<I", 0))
        started = _wait_for(lambda: os.path.exists(pidfile) and os.path.getsize(pidfile), 30)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        complete = _wait_for(lambda: len(_hook_log(base)) == 4, 30)
        with open(pidfile) as f:
            slow = int(f.read())
        try:
            os.kill(slow, signal.SIGKILL)  # its own session: it outlived the daemon
        except ProcessLookupError:
            pass
        return started, complete, _hook_log(base), d.output()

    started, complete, log, output = _scenario(
        tmp_path, body, hooks=hooks, config="vss:\n  hook_timeout: 12\n", as_installed=True
    )
    assert started and complete, output
    assert log == [
        ["10-a", "freeze"],
        ["20-slow", "freeze"],
        ["20-slow", "freezefail"],
        ["10-a", "freezefail"],
    ]
