"""Device and network interface events from the kernel's uevent netlink socket.

``UdevWatcher`` reads the kernel's uevents (``hvguest.transport.uevent``) for the poll
loop: ``fileno()`` to watch, ``drain()`` to read every queued event without blocking,
``close()``. The daemons use it to act on a change at once instead of at their next
periodic poll; the poll stays, because events can be unavailable (a sandbox without
AF_NETLINK) or lost (receive buffer overflow), so an event is a hint to look again,
never the only way to notice a change.

Why the kernel's events and not udevd's: every change our callers look for is a
kernel uevent of its own (a channel offered or rescinded, a driver bound, a device
node or network interface added, renamed or removed); udevd's re-sent events add
only what its rules did (symbolic links, permissions), which nothing here reads. And
the kernel's reach us where udevd's do not: without udevd (containers, early boot)
and in a private network namespace (``PrivateNetwork=``): the kernel broadcasts
uevents into every network namespace of the initial user namespace (a network
interface's only into its own). Reading them takes the standard library alone, where
libudev through ctypes cost the daemons about 3 MB of resident memory each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from hvguest.errors import TransportError
from hvguest.text import printable
from hvguest.transport.uevent import (
    DROPPED,
    KEPT_PROPERTIES,
    Receiver,
    UdevEvent,
    open_uevent_socket,
    parse_uevent,
    receive_error_lost_events,
)

__all__ = ["DRAIN_LIMIT", "KEPT_PROPERTIES", "OVERFLOW", "EventTrigger", "UdevEvent",
           "UdevWatcher"]

log = logging.getLogger(__name__)

# A storm (every channel of a rescinded device, say) is read in slices so that one
# readable socket cannot hold the loop; the rest is read on the next round.
DRAIN_LIMIT = 256
# drain()'s marker for events the kernel dropped (the socket's buffer overflowed).
OVERFLOW = "overflow"


class UeventSocket(Protocol):
    """The part of a netlink socket used here (tests give a fake)."""

    def fileno(self) -> int: ...

    def recvfrom(self, bufsize: int) -> tuple[bytes, Any]: ...

    def close(self) -> None: ...


class UdevWatcher:
    """Events of ``subsystems``, read without blocking; ``open()`` for the fallible path."""

    def __init__(
        self,
        subsystems: Sequence[str],
        *,
        socket_factory: Callable[[], UeventSocket] = open_uevent_socket,
        sys_root: str = "/sys",
    ) -> None:
        """Raises ``TransportError`` when the socket cannot be set up."""
        if not subsystems:
            raise ValueError("UdevWatcher needs at least one subsystem")
        self.subsystems = tuple(dict.fromkeys(subsystems))
        self.sys_root = sys_root
        self.lost = 0
        self.malformed = 0
        try:
            sock = socket_factory()
        except OSError as exc:
            raise TransportError(
                f"cannot watch kernel events of {', '.join(self.subsystems)}: {exc}"
            ) from exc
        self._sock: UeventSocket | None = sock
        self._receiver = Receiver(sock.recvfrom)

    @classmethod
    def open(cls, subsystems: Sequence[str], **kwargs: Any) -> UdevWatcher | None:
        """A watcher, or None (logged at debug level) when events are unavailable:
        the caller then relies on its periodic poll alone."""
        try:
            return cls(subsystems, **kwargs)
        except TransportError as exc:
            log.debug("%s; relying on periodic polls", exc)
            return None

    @property
    def closed(self) -> bool:
        return self._sock is None

    @property
    def foreign(self) -> int:
        """Datagrams dropped because a process, not the kernel, sent them."""
        return self._receiver.foreign

    def fileno(self) -> int:
        if self._sock is None:
            raise TransportError("udev watcher is closed")
        return self._sock.fileno()

    def drain(self, limit: int = DRAIN_LIMIT) -> list[UdevEvent]:
        """The queued events (from at most ``limit`` datagrams), oldest first; [] when none.

        An overflowed receive buffer means events were lost: that is reported as one
        event with action ``OVERFLOW`` so that callers which look again on any event
        do the right thing. Other receive errors raise ``TransportError``.
        """
        if self._sock is None:
            return []
        events: list[UdevEvent] = []
        # Every datagram read counts, kept or not: a storm of other subsystems' events
        # (or of forged ones) cannot hold the loop either.
        for _ in range(limit):
            try:
                data = self._receiver.next()
            except OSError as exc:
                if receive_error_lost_events(exc):
                    self.lost += 1
                    events.append(UdevEvent(OVERFLOW, "", "", ""))
                    continue
                raise TransportError(f"reading udev events failed: {exc}") from exc
            if data is None:
                break
            if data == DROPPED:
                continue
            event = parse_uevent(data, self.sys_root)
            if event is None:
                self.malformed += 1
            elif event.subsystem in self.subsystems:
                events.append(event)
        return events

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _Timer(Protocol):
    def cancel(self) -> None: ...


class _Loop(Protocol):
    """The part of ``hvguest.daemon.Runtime`` the trigger needs."""

    def add_reader(self, fd: Any, callback: Callable[[], Any]) -> None: ...

    def remove_reader(self, fd: Any) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Any: ...

    def on_stop(self, callback: Callable[[], Any]) -> None: ...


class EventSource(Protocol):
    def fileno(self) -> int: ...

    def drain(self) -> list[UdevEvent]: ...

    def close(self) -> None: ...


class EventTrigger:
    """Runs ``callback`` once, ``delay`` seconds after the first relevant event.

    Events that arrive while the call is pending join it: a burst (a device's channels,
    its driver binding, its device nodes) costs one call. The delay is counted from the
    first event, not the last, so a steady stream of events cannot postpone the call
    for ever. A watcher that fails is closed; the caller's periodic work goes on.
    """

    def __init__(
        self,
        loop: _Loop,
        watcher: EventSource,
        callback: Callable[[], Any],
        *,
        delay: float,
        wanted: Callable[[UdevEvent], bool] = lambda event: True,
        what: str = "device changes",
    ) -> None:
        self.loop = loop
        self.watcher: EventSource | None = watcher
        self.callback = callback
        self.delay = delay
        self.wanted = wanted
        self.what = what
        self.pending: _Timer | None = None
        self.events = 0
        self.calls = 0
        loop.add_reader(watcher, self.on_readable)
        loop.on_stop(self.close)

    def on_readable(self) -> None:
        if self.watcher is None:
            return
        try:
            events = self.watcher.drain()
        except TransportError as exc:
            log.warning("%s; noticing %s at the periodic poll only", exc, self.what)
            self.close()
            return
        relevant = [e for e in events if e.action == OVERFLOW or self.wanted(e)]
        for e in relevant:
            log.debug("uevent: %s %s %s", e.action, printable(e.subsystem),
                      printable(e.sys_name or e.sys_path))
        if not relevant:
            return
        self.events += len(relevant)
        if self.pending is None:
            self.pending = self.loop.call_later(self.delay, self._fire)

    def _fire(self) -> None:
        self.pending = None
        self.calls += 1
        self.callback()

    def close(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        if self.watcher is not None:
            self.loop.remove_reader(self.watcher)
            self.watcher.close()
            self.watcher = None
