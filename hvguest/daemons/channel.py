"""The channel runner: everything the device-serving daemons share.

hvguest-kvpd, -vssd and -fcopyd each serve one kernel channel. What differs is the
role and what its actions do; what is the same lives here, once:

* open and register at start, a clear error (and a "failed" state file) when the
  device is not there;
* read each message the poll loop reports and hand it to the service;
* send replies; a failed read or write closes the device, tells the service
  (VSS thaws, KVP and fcopy forget the request in flight) and re-opens it after
  the shared back-off, the failures logged once per period;
* the state file (``/run/hvguest/<service>.json``): published when something
  changed, at most once a period, never while the service holds it;
* sd_notify: READY with a one-line summary, STATUS every few seconds;
* the ``main()`` epilogue: start, ready, run, close whatever happens.

A service plugs in through ``ChannelService``; it owns its role and carries out its
actions, and calls ``send()`` for replies.

``DeviceThread`` is the other way to serve a device: a worker thread that owns it and
blocks in its reads (hvguest-fcopyd: on a FUSE-served device every poll is a round
trip, and the kernel holds one message at a time anyway).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Protocol

from hvguest.backoff import Backoff
from hvguest.daemon import Runtime, Timer
from hvguest.errors import HvGuestError, TransportError
from hvguest.log import Throttle
from hvguest.state import StatePublisher
from hvguest.transport.base import Transport

log = logging.getLogger(__name__)

LOG_PERIOD = 60.0
STATE_PERIOD = 1.0
STATUS_PERIOD = 5.0


class ChannelService(Protocol):
    """What a daemon provides to its channel."""

    def registered(self, version: str) -> None:
        """The device is open and registered (at start and after every re-open)."""

    def serve(self, message: bytes) -> None:
        """Handle one message; replies go through ``Channel.send``."""

    def lost(self, error: TransportError) -> None:
        """The device failed; it is closed and will be re-opened. Nothing the host
        asked for may stay half done (a freeze is thawed)."""

    def details(self) -> dict[str, Any]:
        """The service-specific part of the state file."""

    def status_text(self) -> str:
        """One line for ``systemctl status`` (sd_notify STATUS=)."""


class Channel:
    """One service's device: open, read, send, fail, re-open, publish."""

    def __init__(
        self,
        name: str,
        runtime: Runtime,
        transport: Transport,
        *,
        state: StatePublisher,
        remedy: str,
        exit_when_gone: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``remedy``: what the admin can do while re-opening fails.
        ``exit_when_gone``: a device node that disappears means the host withdrew
        the service: exit 0 instead of retrying (the unit's BindsTo= agrees)."""
        self.name = name
        self.runtime = runtime
        self.transport = transport
        self.state = state
        self.remedy = remedy
        self.exit_when_gone = exit_when_gone
        self.clock = clock
        self.backoff = Backoff()
        self.throttle = Throttle(LOG_PERIOD, clock)
        self.dirty = True
        self._service: ChannelService | None = None
        self._reopen_timer: Timer | None = None
        self._stopping = False
        self.can_publish: Callable[[], bool] = lambda: True

    @property
    def service(self) -> ChannelService:
        if self._service is None:
            raise HvGuestError(f"{self.name}: channel has no service attached")
        return self._service

    # -- lifecycle -------------------------------------------------------------

    def start(self, service: ChannelService) -> None:
        """Open and register; TransportError when the device is absent or busy."""
        self._service = service
        if not self.transport.is_open:
            self.transport.open()
        self._registered()
        self.runtime.on_stop(self.close)
        self.runtime.call_every(STATE_PERIOD, self.publish_if_dirty)
        self.runtime.call_every(STATUS_PERIOD, self._notify_status)
        self.state.update(state="ready", device=self.transport.path)
        self.publish()

    def _registered(self) -> None:
        version = self.transport.version or "Unknown version"
        self.runtime.add_reader(self.transport, self._on_readable)
        self.service.registered(version)
        log.info("registered with %s, protocol version %s", self.transport.path, version)

    def close(self) -> None:
        self._stopping = True
        if self._reopen_timer is not None:
            self._reopen_timer.cancel()
            self._reopen_timer = None
        self.runtime.remove_reader(self.transport)
        self.transport.close()

    # -- messages --------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            message = self.transport.read_ready()
        except TransportError as exc:
            self.failed(exc)
            return
        if message:
            self.service.serve(message)

    def send(self, reply: bytes) -> bool:
        """Write one reply; False when the device failed (it is re-opened)."""
        try:
            self.transport.write_packet(reply)
        except TransportError as exc:
            self.failed(exc)
            return False
        self.backoff.healthy()  # a request served: the next failure starts over
        return True

    # -- failure and re-open ---------------------------------------------------

    def failed(self, exc: TransportError) -> None:
        if self._reopen_timer is not None or self._stopping:
            return  # already waiting to re-open
        self._say(("device", type(exc)), logging.WARNING, "%s; re-registering", exc)
        self.runtime.remove_reader(self.transport)
        self.transport.close()
        self.service.lost(exc)
        self.state.update(state="re-registering")
        self.dirty = True
        # Not at once: a device that opens and fails again must not spin.
        self._reopen_timer = self.runtime.call_later(self.backoff.next_delay(), self._reopen)

    def _reopen(self) -> None:
        self._reopen_timer = None
        if self._stopping:
            return
        try:
            self.transport.open()
        except TransportError as exc:
            if self.exit_when_gone and not os.path.exists(self.transport.path):
                log.info("%s is gone: the host no longer offers the service; exiting",
                         self.transport.path)
                self.runtime.stop(0)
                return
            delay = self.backoff.next_delay()
            self._say(("reopen", str(exc)), logging.ERROR,
                      "cannot re-register: %s; retrying in %g s", exc, delay)
            self.state.record_error(str(exc), self.remedy)
            self.dirty = True
            self._reopen_timer = self.runtime.call_later(delay, self._reopen)
            return
        self._registered()
        self.state.update(state="ready")
        self.state.clear_error()
        self.dirty = True

    def _say(self, key: object, level: int, message: str, *args: object) -> None:
        show, suppressed = self.throttle.should_log(key)
        if show:
            if suppressed:
                message += f" ({suppressed} similar not shown)"
            log.log(level, message, *args)

    # -- state file and sd_notify -------------------------------------------------

    def publish(self) -> None:
        self.state.update(details=self.service.details())
        if self.state.publish():
            self.dirty = False

    def publish_if_dirty(self) -> None:
        if self.dirty and self.can_publish():
            self.publish()

    def _notify_status(self) -> None:
        self.runtime.status(self.service.status_text())


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


def run_daemon(
    runtime: Runtime,
    start: Callable[[], None],
    ready: Callable[[], str],
    *,
    state: StatePublisher | None = None,
    cleanup: Callable[[], None] = lambda: None,
) -> int:
    """The end of every daemon's ``main()``: start (a failure is logged, recorded
    in the state file and exits 1), tell systemd it is ready, serve until stopped,
    and release everything whatever happened."""
    try:
        try:
            start()
        except HvGuestError as exc:
            log.error("%s", exc)
            if state is not None:
                state.record_error(str(exc))
                state.update(state="failed")
                state.publish()
            return 1
        runtime.ready(ready())
        return runtime.run()
    finally:
        cleanup()
        runtime.close()
