"""Runtime: timers, readers, signals, notify, exceptions in callbacks."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator

import pytest

from hvguest.daemon import Runtime


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = Runtime("test")
    yield runtime
    runtime.close()


@pytest.fixture
def notify_socket(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    path = os.path.join(str(tmp_path), "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return out


def test_timers_run_in_order_and_stop_returns_code(rt: Runtime) -> None:
    calls: list[str] = []
    rt.call_later(0.02, lambda: calls.append("b"))
    rt.call_later(0.0, lambda: calls.append("a"))
    cancelled = rt.call_later(0.01, lambda: calls.append("never"))
    cancelled.cancel()
    rt.call_later(0.05, lambda: rt.stop(3))
    assert rt.run() == 3
    assert calls == ["a", "b"]


class SteppingClock:
    """Time that moves only when read, ``step`` seconds per reading: the loop still
    sleeps in poll(), but which timers are due, and when, no longer depends on how
    long a loaded machine took to wake it. The default step is a power of two (sums
    stay exact) and well under the 1 ms tolerance the spacing check allows."""

    def __init__(self, step: float = 2**-11) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_call_every_repeats_until_cancelled() -> None:
    rt = Runtime("test", clock=SteppingClock())
    try:
        ticks: list[float] = []

        def tick() -> None:
            ticks.append(rt.clock())
            if len(ticks) == 3:
                timer.cancel()
                rt.call_later(0.03, rt.stop)

        timer = rt.call_every(0.01, tick)
        rt.call_later(10, lambda: rt.stop(9))
        assert rt.run() == 0
        assert len(ticks) == 3
        assert all(b - a >= 0.009 for a, b in zip(ticks, ticks[1:], strict=False))
    finally:
        rt.close()


def test_call_every_with_fake_clock(rt: Runtime) -> None:
    now = [100.0]
    runtime = Runtime("fake", clock=lambda: now[0])
    try:
        ticks: list[float] = []
        runtime.call_every(10, lambda: ticks.append(now[0]))
        runtime.run_once()
        assert ticks == []
        now[0] = 110.0
        runtime.run_once()
        now[0] = 135.0  # a stall: one call, not a burst of catch-up calls
        runtime.run_once()
        runtime.run_once()
        assert ticks == [110.0, 135.0]
    finally:
        runtime.close()


def test_reader_callbacks_and_remove(rt: Runtime) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    got: list[bytes] = []

    def on_read() -> None:
        got.append(b.recv(100))
        if len(got) == 2:
            rt.remove_reader(b)
            a.send(b"three")  # not read: the reader is gone
            rt.call_later(0.03, rt.stop)

    rt.add_reader(b, on_read)
    a.send(b"one")
    rt.call_later(0.02, lambda: a.send(b"two"))
    rt.call_later(10, lambda: rt.stop(9))
    assert rt.run() == 0
    assert got == [b"one", b"two"]
    assert b.recv(100) == b"three"
    a.close()
    b.close()


def test_exception_in_callback_is_logged_and_loop_continues(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = socket.socketpair()
    seen: list[bytes] = []

    def bad() -> None:
        data = b.recv(100)
        seen.append(data)
        if data == b"bad":
            raise ValueError("malformed message")
        rt.stop(0)

    rt.add_reader(b, bad)
    a.send(b"bad")
    rt.call_later(0.02, lambda: a.send(b"good"))
    rt.call_later(5, lambda: rt.stop(9))
    with caplog.at_level(logging.ERROR):
        assert rt.run() == 0
    assert seen == [b"bad", b"good"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert "malformed message" in caplog.text
    a.close()
    b.close()


def test_repeated_identical_failures_are_throttled(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    def fail() -> None:
        raise RuntimeError("again")

    rt.call_every(0.001, fail, first=0)
    rt.call_later(0.05, rt.stop)
    with caplog.at_level(logging.ERROR):
        rt.run()
    assert caplog.text.count("RuntimeError: again") == 1


def test_sigterm_stops_orderly_with_stop_callbacks(rt: Runtime) -> None:
    order: list[str] = []
    rt.on_stop(lambda: order.append("first registered"))
    rt.on_stop(lambda: order.append("thaw"))
    rt.call_later(0.01, lambda: os.kill(os.getpid(), signal.SIGTERM))
    rt.call_later(5, lambda: rt.stop(9))
    assert rt.run() == 0
    assert order == ["thaw", "first registered"]


def test_sigterm_before_run_is_not_lost() -> None:
    """ready() comes before run(): a SIGTERM in between still stops in order."""
    before = signal.getsignal(signal.SIGTERM)
    runtime = Runtime("early")
    try:
        stopped: list[int] = []
        runtime.on_stop(lambda: stopped.append(1))
        os.kill(os.getpid(), signal.SIGTERM)
        runtime.call_later(5, lambda: runtime.stop(9))
        assert runtime.run() == 0
        assert stopped == [1]
    finally:
        runtime.close()
    assert signal.getsignal(signal.SIGTERM) == before


def test_sighup_runs_reload_callbacks(rt: Runtime) -> None:
    reloads: list[int] = []
    rt.on_reload(lambda: reloads.append(1))
    rt.on_reload(lambda: rt.stop(0))
    rt.call_later(0.01, lambda: os.kill(os.getpid(), signal.SIGHUP))
    rt.call_later(5, lambda: rt.stop(9))
    assert rt.run() == 0
    assert reloads == [1]


def test_stop_and_call_soon_from_another_thread(rt: Runtime) -> None:
    done: list[str] = []

    def worker() -> None:
        rt.call_soon_threadsafe(lambda: done.append(threading.current_thread().name))
        rt.call_soon_threadsafe(lambda: rt.stop(4))

    rt.call_later(0.01, lambda: threading.Thread(target=worker).start())
    rt.call_later(5, lambda: rt.stop(9))
    assert rt.run() == 4
    assert done == [threading.main_thread().name]


def test_ready_status_and_watchdog_pings(
    rt: Runtime, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # ping every 20 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    rt.ready("serving")
    rt.status("busy")
    rt.call_later(0.1, rt.stop)
    rt.run()
    messages = drain(notify_socket)
    assert messages[0] == "READY=1\nSTATUS=serving"
    assert messages[1] == "STATUS=busy"
    assert messages.count("WATCHDOG=1") >= 2  # one at start, then every 20 ms
    assert messages[-1] == "STOPPING=1"


def test_no_watchdog_for_another_pid(
    rt: Runtime, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    rt.call_later(0.05, rt.stop)
    rt.run()
    assert "WATCHDOG=1" not in drain(notify_socket)


def test_closed_fd_reader_is_dropped(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    rt.add_reader(r, lambda: None)
    rt.call_later(0.02, rt.stop)
    with caplog.at_level(logging.ERROR):
        assert rt.run() == 0
    assert "reader removed" in caplog.text


def test_remove_reader_of_a_closed_transport(rt: Runtime) -> None:
    class Closable:
        def __init__(self) -> None:
            self.sock: socket.socket | None = socket.socket()

        def fileno(self) -> int:
            if self.sock is None:
                raise OSError("closed")
            return self.sock.fileno()

        def close(self) -> None:
            assert self.sock is not None
            self.sock.close()
            self.sock = None

    t = Closable()
    rt.add_reader(t, lambda: None)
    t.close()
    rt.remove_reader(t)
    rt.remove_reader(t)
    assert rt._readers == {}
