"""The poll loop every hvguest daemon runs.

One thread serves all file descriptors and timers. Signals arrive through a
self-pipe, so SIGTERM interrupts a poll() at once and the stop is orderly:
the on_stop callbacks (VSS: thaw) run on the loop thread, never inside a
signal handler. A callback that raises is logged with its traceback and the
loop goes on: a bad message must never end a daemon.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from hvguest.log import Throttle
from hvguest.notify import notify, watchdog_interval

log = logging.getLogger(__name__)

Callback = Callable[[], Any]

_WAKE = 0  # byte written by call_soon_threadsafe (signal numbers are >= 1)
_EXC_LOG_PERIOD = 60.0


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


@dataclass(order=True)
class Timer:
    """A scheduled call; ``cancel()`` prevents further runs."""

    when: float
    seq: int
    callback: Callback = field(compare=False)
    interval: float | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


def _fd_of(fd: int | _HasFileno) -> int:
    return fd if isinstance(fd, int) else fd.fileno()


class Runtime:
    """Readers, timers, signals and sd_notify for one daemon."""

    def __init__(self, name: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self._readers: dict[int, Callback] = {}
        self._owners: dict[int, int | _HasFileno] = {}
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self._stop_callbacks: list[Callback] = []
        self._reload_callbacks: list[Callback] = []
        self._pending: deque[Callback] = deque()
        self._running = False
        self._exit_code: int | None = None
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._rfd, select.POLLIN)
        self._throttle = Throttle(_EXC_LOG_PERIOD, clock)
        self._lock = threading.Lock()
        # Installed now, not in run(): a SIGTERM that arrives between ready()
        # and run() must still mean an orderly stop, not the default death.
        self._previous_handlers = self._install_signals()

    # -- registration ------------------------------------------------------

    def add_reader(self, fd: int | _HasFileno, callback: Callback) -> None:
        """Call ``callback()`` whenever ``fd`` is readable (or reports an error:
        the callback's read then raises and it decides what to do)."""
        number = _fd_of(fd)
        if number in self._readers:
            self._poller.modify(number, select.POLLIN)
        else:
            self._poller.register(number, select.POLLIN)
        self._readers[number] = callback
        self._owners[number] = fd

    def remove_reader(self, fd: int | _HasFileno) -> None:
        """Stop watching ``fd``; an object already closed (fileno() raises) is
        found by identity."""
        try:
            number: int | None = _fd_of(fd)
        except Exception:
            number = next((n for n, o in self._owners.items() if o is fd), None)
        if number is not None:
            self._forget(number)

    def _forget(self, number: int) -> None:
        if self._readers.pop(number, None) is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._poller.unregister(number)
        self._owners.pop(number, None)

    def call_later(self, delay: float, callback: Callback) -> Timer:
        timer = Timer(self.clock() + max(0.0, delay), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def call_every(
        self, interval: float, callback: Callback, *, first: float | None = None
    ) -> Timer:
        """Call ``callback`` every ``interval`` seconds, first after ``first``
        (default: one interval). One Timer object for the whole series."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        delay = interval if first is None else first
        timer = Timer(self.clock() + max(0.0, delay), next(self._seq), callback, interval)
        heapq.heappush(self._timers, timer)
        return timer

    def call_soon_threadsafe(self, callback: Callback) -> None:
        """Run ``callback`` on the loop thread soon; safe from any thread."""
        with self._lock:
            self._pending.append(callback)
        self._wake(_WAKE)

    def on_stop(self, callback: Callback) -> None:
        """Run at orderly stop, in reverse order of registration."""
        self._stop_callbacks.append(callback)

    def on_reload(self, callback: Callback) -> None:
        """Run on SIGHUP."""
        self._reload_callbacks.append(callback)

    # -- service manager -----------------------------------------------------

    def ready(self, status: str) -> None:
        notify(f"READY=1\nSTATUS={status}")
        log.info("%s ready: %s", self.name, status)

    def status(self, text: str) -> None:
        notify(f"STATUS={text}")

    @contextlib.contextmanager
    def keepalive(self, seconds: float) -> Iterator[None]:
        """Feed the watchdog from a helper thread while the loop thread does
        blocking work that bounds itself (hooks, FIFREEZE), for at most
        ``seconds``: past that the pings stop, so a real hang is still caught."""
        wd = watchdog_interval()
        if wd is None:
            yield
            return
        done = threading.Event()
        end = time.monotonic() + seconds

        def ping() -> None:
            while time.monotonic() < end:
                notify("WATCHDOG=1")
                if done.wait(min(wd / 4, max(0.0, end - time.monotonic()))):
                    return

        thread = threading.Thread(target=ping, name=f"{self.name}-watchdog", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    # -- loop ------------------------------------------------------------------

    def stop(self, code: int = 0) -> None:
        """End ``run()`` after the current callback; safe from any thread or a
        signal handler."""
        if self._exit_code is None:
            self._exit_code = code
        self._wake(_WAKE)

    @property
    def running(self) -> bool:
        return self._running

    def run(self) -> int:
        """Serve until ``stop()`` or SIGTERM/SIGINT; returns the exit code."""
        self._running = True
        if not self._previous_handlers:
            self._previous_handlers = self._install_signals()
        wd = watchdog_interval()
        wd_timer: Timer | None = None
        if wd is not None:
            notify("WATCHDOG=1")
            wd_timer = self.call_every(wd / 2, lambda: notify("WATCHDOG=1"))
        try:
            while self._exit_code is None:
                self._iterate()
        finally:
            if wd_timer is not None:
                wd_timer.cancel()
            notify("STOPPING=1")
            for callback in reversed(self._stop_callbacks):
                self._invoke(callback, "stop callback")
            self._running = False
        code = self._exit_code
        self._exit_code = None
        return code

    def close(self) -> None:
        """Restore the previous signal handlers and release the self-pipe (the
        Runtime cannot be used afterwards)."""
        self._restore_signals(self._previous_handlers)
        self._previous_handlers = {}
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def run_once(self, timeout: float = 0.0) -> None:
        """One poll/dispatch round (for tests and embedding)."""
        self._iterate(max_timeout=timeout)

    # -- internals -------------------------------------------------------------

    def _iterate(self, max_timeout: float | None = None) -> None:
        timeout = self._next_timeout()
        if max_timeout is not None:
            timeout = max_timeout if timeout is None else min(timeout, max_timeout)
        ms = None if timeout is None else int(timeout * 1000 + 0.999)
        events = self._poller.poll(ms)
        for fd, mask in events:
            if fd == self._rfd:
                self._drain_wakeups()
                continue
            if self._exit_code is not None:
                break
            callback = self._readers.get(fd)
            if callback is None:  # removed by an earlier callback in this round
                continue
            if mask & select.POLLNVAL:
                log.error("%s: fd %d is not open; reader removed", self.name, fd)
                self._forget(fd)
                continue
            self._invoke(callback, "reader for fd", fd)
        self._run_pending()
        self._run_timers()

    def _next_timeout(self) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if self._pending:
            return 0.0
        if not self._timers:
            return None
        return max(0.0, self._timers[0].when - self.clock())

    def _run_timers(self) -> None:
        now = self.clock()
        while self._timers and self._exit_code is None:
            timer = self._timers[0]
            if timer.cancelled:
                heapq.heappop(self._timers)
                continue
            if timer.when > now:
                break
            heapq.heappop(self._timers)
            if timer.interval is not None:
                # Fixed rate, but never a burst of catch-up calls after a stall.
                timer.when += timer.interval
                if timer.when <= now:
                    timer.when = now + timer.interval
                timer.seq = next(self._seq)
                heapq.heappush(self._timers, timer)
            self._invoke(timer.callback, "timer")

    def _run_pending(self) -> None:
        # Unlocked peek first (this runs on every loop round): a callback appended
        # after it is not lost, its wake-up byte makes the next poll return at once.
        if not self._pending:
            return
        while True:
            with self._lock:
                if not self._pending:
                    return
                callback = self._pending.popleft()
            self._invoke(callback, "scheduled call")

    def _invoke(self, callback: Callback, what: str, fd: int | None = None) -> None:
        """Call ``callback``; log what it raises. ``fd`` completes ``what`` only in
        that log line: no string is built for a reader on every message."""
        try:
            callback()
        except Exception as exc:
            key = (getattr(callback, "__qualname__", repr(callback)), type(exc))
            show, suppressed = self._throttle.should_log(key)
            if show:
                if fd is not None:
                    what = f"{what} {fd}"
                extra = f" ({suppressed} similar failures not shown)" if suppressed else ""
                log.exception("%s: %s %r failed%s", self.name, what, callback, extra)

    def _wake(self, byte: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wfd, bytes([byte]))

    def _drain_wakeups(self) -> None:
        while True:
            try:
                data = os.read(self._rfd, 512)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            for signum in data:
                if signum == _WAKE:
                    continue
                self._handle_signal(signum)

    def _handle_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            log.info("%s: %s received, stopping", self.name, signal.Signals(signum).name)
            self.stop(0)
        elif signum == signal.SIGHUP:
            log.info("%s: SIGHUP received, reloading", self.name)
            for callback in self._reload_callbacks:
                self._invoke(callback, "reload callback")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._wake(signum)

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            log.debug("%s: not on the main thread; signals not handled", self.name)
            return previous
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in previous.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, handler)
