"""The channel runner: everything the device-serving daemons share.

hvguest-kvpd, -vssd and -fcopyd each serve one kernel channel. What differs is the
role and what its actions do; what is the same lives here, once (``ChannelRunner``):

* open and register at start, a clear error (and a "failed" state file) when the
  device is not there, or (``wait_at_start``) a warning and the re-open back-off;
* a failed device is closed, the service told (VSS thaws, KVP and fcopy forget the
  request in flight) and re-opened after the shared back-off, the failures logged
  once per period; a device that is gone (``gone``) ends the daemon with 0;
* the state file (``/run/hvguest/<service>.json``): published when something
  changed, at most once a period (a loss and a re-open at once), never while the
  service holds it;
* sd_notify: READY with a one-line summary, STATUS every few seconds;
* the ``main()`` epilogue (``run_daemon``): start, ready, run, close whatever happens.

Two ways to read the device, one class each:

* ``Channel`` (hvguest-kvpd, -vssd): the event loop polls a ``Transport`` and hands
  each message to ``ChannelService.serve``, which answers through ``send()``.
* ``WorkerChannel`` (hvguest-fcopyd, in ``worker_channel.py``): after each open a
  ``DeviceThread`` owns the device and blocks in its reads; a ``TransportError`` there
  reaches ``failed()`` on the loop thread. The device only needs ``Device`` (the UIO
  ring is not a polled ``Transport``); ``lock`` guards what both threads share.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

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


class DeviceService(Protocol):
    """What a daemon provides to its channel, whichever way it reads."""

    def registered(self, version: str) -> None:
        """The device is open and registered (at start and after every re-open)."""

    def lost(self, error: TransportError) -> None:
        """The device failed; it is closed and will be re-opened. Nothing the host
        asked for may stay half done (a freeze is thawed)."""

    def details(self) -> dict[str, Any]:
        """The service-specific part of the state file."""

    def status_text(self) -> str:
        """One line for ``systemctl status`` (sd_notify STATUS=)."""


class ChannelService(DeviceService, Protocol):
    """A service whose messages the event loop reads (``Channel``)."""

    def serve(self, message: bytes) -> None:
        """Handle one message; replies go through ``Channel.send``."""


class Device(Protocol):
    """What the runner needs of a device: every ``Transport`` is one."""

    @property
    def path(self) -> str: ...

    @property
    def version(self) -> str | None: ...

    @property
    def is_open(self) -> bool: ...

    def open(self) -> object: ...

    def close(self) -> None: ...


D = TypeVar("D", bound=Device)
S = TypeVar("S", bound=DeviceService)


class ChannelRunner(ABC, Generic[D, S]):
    """One service's device: open, fail, re-open, publish. ``Channel`` and
    ``WorkerChannel`` add how messages are read (``_attach``/``_detach``/``_release``)."""

    def __init__(
        self,
        name: str,
        runtime: Runtime,
        transport: D,
        *,
        state: StatePublisher,
        remedy: str,
        exit_when_gone: bool = False,
        gone: Callable[[], bool] | None = None,
        wait_at_start: bool = False,
        reopening: str = "re-registering",
        lock: contextlib.AbstractContextManager[object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``remedy``: what the admin can do while re-opening fails.
        ``exit_when_gone``: a device node that disappears means the host withdrew
        the service: exit 0 instead of retrying (the unit's BindsTo= agrees);
        ``gone``: the same with another test than the node's absence.
        ``wait_at_start``: a device that cannot be opened at start is waited for
        with the re-open back-off instead of failing the start.
        ``reopening``: the state shown while the device is closed.
        ``lock``: held while the channel touches the service or the state file
        (worker mode: the worker thread shares them)."""
        self.name = name
        self.runtime = runtime
        self.transport = transport
        self.state = state
        self.remedy = remedy
        if gone is None and exit_when_gone:
            gone = self._node_missing
        self.gone = gone
        self.wait_at_start = wait_at_start
        self.reopening = reopening
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.clock = clock
        self.backoff = Backoff()
        self.throttle = Throttle(LOG_PERIOD, clock)
        self.dirty = True
        self._service: S | None = None
        self._reopen_timer: Timer | None = None
        self._retry_key: object = None
        self._stopping = False
        self.can_publish: Callable[[], bool] = lambda: True

    @property
    def service(self) -> S:
        if self._service is None:
            raise HvGuestError(f"{self.name}: channel has no service attached")
        return self._service

    def _node_missing(self) -> bool:
        return not os.path.exists(self.transport.path)

    # -- how messages are read (the two modes) -----------------------------------

    @abstractmethod
    def _attach(self) -> None:
        """The device is open: start reading it."""

    @abstractmethod
    def _detach(self) -> None:
        """The device failed: stop reading it (it is closed next)."""

    @abstractmethod
    def _release(self) -> None:
        """The daemon stops: stop reading, release the device."""

    # -- lifecycle -------------------------------------------------------------

    def start(self, service: S) -> None:
        """Open and register; TransportError when the device is absent or busy
        (with ``wait_at_start``: said once per period, and waited for)."""
        self._service = service
        try:
            if not self.transport.is_open:
                self.transport.open()
        except TransportError as exc:
            if not self.wait_at_start:
                raise
            with self.lock:
                self.state.update(state=self.reopening)
            self._retry(exc, logging.WARNING, "cannot open the device: %s; next attempt in %g s")
        else:
            self._registered()
        self.runtime.on_stop(self.close)
        self.runtime.call_every(STATE_PERIOD, self.publish_if_dirty)
        self.runtime.call_every(STATUS_PERIOD, self._notify_status)
        self.publish()

    def _registered(self, *, again: bool = False) -> None:
        version, path = self.transport.version, self.transport.path
        with self.lock:
            self.service.registered(version or "Unknown version")
            self.state.update(state="ready", device=path)
            if again:
                self.state.clear_error()
            self.dirty = True
        if version is None:  # a ring: the versions are negotiated in its messages
            log.info("opened %s", path)
        else:
            log.info("registered with %s, protocol version %s", path, version)
        self._attach()  # last: a worker may serve at once

    def close(self) -> None:
        self._stopping = True
        if self._reopen_timer is not None:
            self._reopen_timer.cancel()
            self._reopen_timer = None
        self._release()

    # -- failure and re-open ---------------------------------------------------

    def failed(self, exc: TransportError) -> None:
        if self._reopen_timer is not None or self._stopping:
            return  # already waiting to re-open
        self._say(("device", type(exc)), logging.WARNING, "%s; re-registering", exc)
        self._detach()
        with self.lock:
            # Before the close: what the service still holds of the device (a
            # fragment's view into the ring) must not outlive the mapping.
            self.service.lost(exc)
            self.state.update(state=self.reopening)
            self.dirty = True
        try:
            self.transport.close()
        except Exception as exc2:  # the re-open must be scheduled whatever happens
            log.warning("%s: closing after the failure: %r", self.transport.path, exc2)
        # Not at once: a device that opens and fails again must not spin.
        self._reopen_timer = self.runtime.call_later(self.backoff.next_delay(), self._reopen)
        self.publish_if_dirty()  # the loss shows at once (once per back-off step)

    def _reopen(self) -> None:
        self._reopen_timer = None
        if self._stopping:
            return
        try:
            self.transport.open()
        except TransportError as exc:
            if self.gone is not None and self.gone():
                log.info("%s is gone: the host no longer offers the service; exiting",
                         self.transport.path)
                self.runtime.stop(0)
                return
            self._retry(exc, logging.ERROR, "cannot re-register: %s; retrying in %g s")
            self.publish_if_dirty()
            return
        self._registered(again=True)
        self.throttle.reset(self._retry_key)  # a new failure is news again
        self.publish_if_dirty()

    def _retry(self, exc: TransportError, level: int, message: str) -> None:
        delay = self.backoff.next_delay()
        self._retry_key = ("reopen", str(exc))
        self._say(self._retry_key, level, message, exc, delay)
        with self.lock:
            self.state.record_error(str(exc), self.remedy)
            self.dirty = True
        self._reopen_timer = self.runtime.call_later(delay, self._reopen)

    def _say(self, key: object, level: int, message: str, *args: object) -> None:
        show, suppressed = self.throttle.should_log(key)
        if show:
            if suppressed:
                message += f" ({suppressed} similar not shown)"
            log.log(level, message, *args)

    # -- state file and sd_notify -------------------------------------------------

    def publish(self) -> None:
        with self.lock:
            self.state.update(details=self.service.details())
            if self.state.publish():
                self.dirty = False

    def publish_if_dirty(self) -> None:
        if self.dirty and self.can_publish():
            self.publish()

    def _notify_status(self) -> None:
        with self.lock:
            text = self.service.status_text()
        self.runtime.status(text)


class Channel(ChannelRunner[Transport, ChannelService]):
    """A polled device: the event loop reads each message the transport reports."""

    def _attach(self) -> None:
        self.runtime.add_reader(self.transport, self._on_readable)

    def _detach(self) -> None:
        self.runtime.remove_reader(self.transport)

    def _release(self) -> None:
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
