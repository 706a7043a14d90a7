"""Worker mode of the channel runner: a thread owns the device and blocks in its reads.

hvguest-fcopyd serves its device this way: on a FUSE-served device every poll is a
round trip, and the kernel holds one message at a time anyway. ``WorkerChannel`` is
a ``ChannelRunner`` (hvguest.daemons.channel: open, back-off, re-open, throttled
logs, state file, sd_notify); after each open it starts a ``DeviceThread`` running
the service's serve function (``WorkerService.worker``). The device needs only the
runner's ``Device`` protocol (path, version, is_open, open, close): the UIO ring is
not a polled ``Transport``.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar, Protocol

from hvguest.daemon import Runtime
from hvguest.daemons.channel import ChannelRunner, Device, DeviceService
from hvguest.errors import TransportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    """How a ``DeviceThread`` serves the device just opened: ``serve_one`` reads one
    message or batch (blocking) and answers it; ``on_bug`` answers the host when
    serving one message raised something else than a ``TransportError``."""

    name: str
    serve_one: Callable[[], None]
    on_bug: Callable[[], None] = lambda: None


class WorkerService(DeviceService, Protocol):
    """A service whose device a worker thread reads (``WorkerChannel``)."""

    def worker(self) -> Worker:
        """The serve function for the device just opened (fresh per open)."""


class WorkerChannel(ChannelRunner[Device, WorkerService]):
    """A device a ``DeviceThread`` serves: one per open, started by the channel;
    it ends itself on a ``TransportError`` (which reaches ``failed()``) or at stop."""

    def _attach(self) -> None:
        worker = self.service.worker()
        DeviceThread(worker.name, self.runtime, worker.serve_one, stopping=self._is_stopping,
                     failed=self.failed, on_bug=worker.on_bug).start()

    def _is_stopping(self) -> bool:
        return self._stopping

    def _detach(self) -> None:
        """Nothing: the worker that failed has ended."""

    def _release(self) -> None:
        # The worker may sit in a read: the descriptor (and a ring mapping) is left
        # to process exit rather than closed under it.
        pass


@dataclass(eq=False)
class DeviceThread:
    """A blocking worker-thread channel: one thread owns a device and calls
    ``serve_one()`` (read one message or batch, blocking; answer it) until
    ``stopping()``. Only this thread touches the device (a read blocked in one
    thread would stall a write from another on FUSE); the loop thread keeps the
    signals (blocked here), timers and the watchdog, and the service guards what
    both threads share with its own lock.

    A ``TransportError`` ends the worker and reaches ``failed`` on the loop thread
    (which closes, re-opens and starts a new worker); any other exception is a bug
    in serving one message: logged, ``on_bug()`` answers the host if it can, and
    serving goes on.
    """

    SIGNALS: ClassVar[frozenset[int]] = frozenset(
        {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    )

    name: str
    runtime: Runtime
    serve_one: Callable[[], None]
    _: KW_ONLY
    stopping: Callable[[], bool]
    failed: Callable[[TransportError], None]
    on_bug: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)  # they belong to the loop
        while not self.stopping():
            try:
                self.serve_one()
            except TransportError as exc:
                if not self.stopping():
                    # Only the message: the traceback's frames may hold views of a
                    # device mapping that the loop thread is about to close.
                    error = TransportError(str(exc))
                    self.runtime.call_soon_threadsafe(functools.partial(self.failed, error))
                return
            except Exception:  # a bug must not silence the channel
                log.exception("%s: unexpected failure serving the device", self.thread.name)
                try:
                    self.on_bug()
                except TransportError:
                    pass
