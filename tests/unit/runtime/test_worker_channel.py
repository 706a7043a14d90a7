"""WorkerChannel: the channel runner serving a device from a DeviceThread.

A fake device and service, a real Runtime on a fake clock: the back-off timers fire
only when the test moves the clock, so "not before the back-off" is a state check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hvguest.daemon import Runtime
from hvguest.daemons.channel import LOG_PERIOD
from hvguest.daemons.worker_channel import Worker, WorkerChannel
from hvguest.errors import TransportError
from hvguest.paths import Paths
from hvguest.state import StatePublisher, read_state

EIO = "/dev/fake: read failed: Input/output error"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeDevice:
    path: str = "/dev/fake"
    version: str | None = None
    opens: int = 0
    closes: int = 0
    failing_opens: list[TransportError] = field(default_factory=list)
    _open: bool = False

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> object:
        self.opens += 1
        if self.failing_opens:
            raise self.failing_opens.pop(0)
        self._open = True
        return self

    def close(self) -> None:
        self.closes += 1
        self._open = False


class FakeService:
    """Worker 1 fails with EIO when ``fail_first``; later workers serve nothing
    until released (the test's end)."""

    def __init__(self, lock: threading.Lock, *, fail_first: bool = True) -> None:
        self.lock = lock
        self.fail_first = fail_first
        self.release = threading.Event()
        self.workers = 0
        self.lost_errors: list[str] = []
        self.lost_under_lock: list[bool] = []
        self.device: FakeDevice | None = None
        self.open_at_loss: list[bool] = []

    def registered(self, version: str) -> None:
        pass

    def worker(self) -> Worker:
        self.workers += 1
        fail = self.fail_first and self.workers == 1

        def serve_one() -> None:
            if fail:
                raise TransportError(EIO)
            self.release.wait()

        return Worker(f"fake-{self.workers}", serve_one)

    def lost(self, error: TransportError) -> None:
        self.lost_errors.append(str(error))
        self.lost_under_lock.append(self.lock.locked())
        assert self.device is not None
        self.open_at_loss.append(self.device.is_open)

    def details(self) -> dict[str, Any]:
        return {"fake": True}

    def status_text(self) -> str:
        return "fake"


@dataclass
class Env:
    clock: Clock
    runtime: Runtime
    device: FakeDevice
    service: FakeService
    paths: Paths
    gone: list[bool]
    make: Callable[..., WorkerChannel]

    def channel(self, **options: Any) -> WorkerChannel:
        return self.make(**options)

    def state(self) -> dict[str, Any]:
        doc = read_state(self.paths, "fake")
        assert doc is not None
        return doc

    def until(self, what: str, done: Callable[[], bool], *, step: float = 0.0) -> None:
        """Run the loop (moving the fake clock by ``step`` each round) until done."""
        for _ in range(2000):
            if done():
                return
            self.clock.now += step
            self.runtime.run_once(0.01)
        raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def env(tmp_path: Any) -> Iterator[Env]:
    clock = Clock()
    runtime = Runtime("t", clock=clock)
    lock = threading.Lock()
    device = FakeDevice()
    service = FakeService(lock)
    service.device = device
    paths = Paths(run=str(tmp_path / "run"))
    gone = [False]
    channels: list[WorkerChannel] = []

    def make(**options: Any) -> WorkerChannel:
        channel = WorkerChannel("fake", runtime, device, state=StatePublisher("fake", paths),
                                remedy="", gone=lambda: gone[0], lock=lock, clock=clock,
                                **options)
        channels.append(channel)
        return channel

    yield Env(clock, runtime, device, service, paths, gone, make)
    for channel in channels:
        channel.close()
    service.release.set()
    runtime.close()


def test_a_failing_worker_closes_the_device_and_it_reopens_after_the_backoff(env: Env) -> None:
    channel = env.channel()
    channel.start(env.service)
    assert env.device.opens == 1 and env.service.workers == 1
    env.until("the worker's failure to reach the loop", lambda: env.device.closes == 1)
    assert env.service.lost_errors == [EIO]
    assert env.service.lost_under_lock == [True]  # the worker thread shares the service
    # Told before the close: what it holds of the device (a view into a ring
    # mapping) goes before the mapping does.
    assert env.service.open_at_loss == [True]
    assert env.state()["state"] == "re-registering"  # published at once
    # The back-off: while the clock stands still, nothing re-opens.
    for _ in range(3):
        env.runtime.run_once(0.05)
    assert env.device.opens == 1
    env.until("the re-open", lambda: env.device.opens == 2, step=0.02)
    assert env.service.workers == 2  # a fresh worker for the re-opened device
    assert env.state()["state"] == "ready" and env.state()["last_error"] is None


def test_the_device_gone_ends_the_daemon_with_0(env: Env) -> None:
    channel = env.channel()
    channel.start(env.service)
    env.until("the worker's failure", lambda: env.device.closes == 1)
    env.device.failing_opens.append(TransportError("/dev/fake: device absent"))
    env.gone[0] = True
    env.until("the re-open", lambda: env.device.opens == 2, step=0.02)
    # A bounded wait in real time: without the stop, run() would serve forever.
    guard = threading.Timer(5.0, env.runtime.stop, args=(99,))
    guard.start()
    try:
        assert env.runtime.run() == 0
    finally:
        guard.cancel()
    assert channel._reopen_timer is None  # no retry after the exit


def test_a_device_not_gone_is_retried_instead(env: Env) -> None:
    channel = env.channel()
    channel.start(env.service)
    env.until("the worker's failure", lambda: env.device.closes == 1)
    env.device.failing_opens.append(TransportError("/dev/fake: cannot open: busy"))
    env.until("the re-open", lambda: env.device.opens == 2, step=0.02)
    assert channel._reopen_timer is not None
    assert env.state()["last_error"]["message"] == "/dev/fake: cannot open: busy"
    env.until("the next re-open", lambda: env.device.opens == 3, step=0.02)
    assert env.service.workers == 2


def test_a_repeating_failure_is_logged_once_per_period(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hvguest.daemons.channel")
    channel = env.channel()
    channel.start(env.service)
    env.until("the worker's failure", lambda: env.device.closes == 1)
    env.device.failing_opens += [TransportError("/dev/fake: cannot open: busy")] * 6
    env.until("five failed re-opens", lambda: env.device.opens == 6, step=0.05)
    assert env.clock.now - 1000.0 < LOG_PERIOD  # all within one period
    lines = [r.getMessage() for r in caplog.records if "cannot re-register" in r.message]
    assert len(lines) == 1, lines
    env.clock.now += LOG_PERIOD  # the next attempt is in a new period
    env.until("the sixth failed re-open", lambda: env.device.opens == 7, step=0.05)
    lines = [r.getMessage() for r in caplog.records if "cannot re-register" in r.message]
    assert len(lines) == 2 and lines[1].endswith("(4 similar not shown)"), lines


def test_wait_at_start_waits_for_the_device_instead_of_failing(env: Env) -> None:
    env.service.fail_first = False
    env.device.failing_opens.append(TransportError("/dev/fake: not bound yet"))
    channel = env.channel(wait_at_start=True, reopening="waiting for device")
    channel.start(env.service)  # no TransportError
    doc = env.state()
    assert doc["state"] == "waiting for device"
    assert doc["last_error"]["message"] == "/dev/fake: not bound yet"
    assert env.service.workers == 0
    env.until("the second open", lambda: env.device.opens == 2, step=0.02)
    assert env.service.workers == 1
    assert env.state()["state"] == "ready" and env.state()["last_error"] is None


def test_without_wait_at_start_the_start_fails(env: Env) -> None:
    env.device.failing_opens.append(TransportError("/dev/fake: device absent"))
    with pytest.raises(TransportError, match="device absent"):
        env.channel().start(env.service)


def test_close_cancels_a_pending_reopen(env: Env) -> None:
    channel = env.channel()
    channel.start(env.service)
    env.until("the worker's failure", lambda: env.device.closes == 1)
    channel.close()
    env.clock.now += 60.0
    env.runtime.run_once(0.05)
    assert env.device.opens == 1


def test_close_leaves_the_device_to_process_exit(env: Env) -> None:
    env.service.fail_first = False
    channel = env.channel()
    channel.start(env.service)
    channel.close()
    assert env.device.closes == 0  # a worker may sit in a read: not closed under it
