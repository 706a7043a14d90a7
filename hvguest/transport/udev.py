"""Device and network interface events from the kernel's uevent netlink socket.

``UdevWatcher`` wraps a ``pyudev.Monitor`` for the poll loop: ``fileno()`` to watch,
``drain()`` to read every queued event without blocking, ``close()``. The daemons use
it to act on a change at once instead of at their next periodic poll; the poll stays,
because events can be unavailable (no udev in a container, a sandbox without
AF_NETLINK) or lost (receive buffer overflow), so an event is a hint to look again,
never the only way to notice a change.

Event source. libudev offers two: "udev" (events re-sent by udevd after its rules ran:
device nodes exist, interfaces carry their final names) and "kernel" (the raw uevent,
straight from the kernel). "udev" is better when it works, but libudev silently
disables it when ``/run/udev/control`` is absent (no udevd: containers, early boot),
and udevd multicasts in its own network namespace, so a daemon with a private one
(``PrivateNetwork=``) never hears it either. The kernel source has neither problem:
the kernel broadcasts uevents into every network namespace of the initial user
namespace (a network interface's only into its own). So: "udev" when udevd runs and
we share PID 1's network namespace, "kernel" otherwise, including when we cannot tell.
"""

from __future__ import annotations

import errno
import logging
import os
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hvguest.errors import TransportError

log = logging.getLogger(__name__)

UDEV_CONTROL = "/run/udev/control"
SOURCES = ("udev", "kernel")
# Enough to tell what happened; the whole environment (dozens of udev keys) is not kept.
KEPT_PROPERTIES = ("DEVNAME", "DEVTYPE", "DRIVER", "IFINDEX", "INTERFACE", "MODALIAS", "SEQNUM")
# A storm (every channel of a rescinded device, say) is read in slices so that one
# readable socket cannot hold the loop; the rest is read on the next round.
DRAIN_LIMIT = 256
# drain()'s marker for events the kernel dropped (the socket's buffer overflowed).
OVERFLOW = "overflow"


@dataclass(frozen=True)
class UdevEvent:
    action: str  # add, remove, change, move, bind, unbind; OVERFLOW for lost events
    subsystem: str
    sys_name: str
    sys_path: str
    properties: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))

    @classmethod
    def from_device(cls, device: Any) -> UdevEvent:
        """From a ``pyudev.Device`` received by a monitor."""
        props = device.properties
        kept = {k: str(props.get(k)) for k in KEPT_PROPERTIES if props.get(k) is not None}
        return cls(
            action=str(device.action or ""),
            subsystem=str(device.subsystem or ""),
            sys_name=str(device.sys_name or ""),
            sys_path=str(device.sys_path or ""),
            properties=types.MappingProxyType(kept),
        )


class MonitorLike(Protocol):
    """The part of ``pyudev.Monitor`` used here (tests give a fake)."""

    def fileno(self) -> int: ...

    def filter_by(self, subsystem: str, device_type: str | None = None) -> None: ...

    def start(self) -> None: ...

    def poll(self, timeout: float | None = None) -> Any: ...


def _pyudev_context() -> Any:
    import pyudev  # loads libudev through ctypes: only when a watcher is wanted

    return pyudev.Context()


def _pyudev_monitor(context: Any, source: str) -> MonitorLike:
    import pyudev

    monitor: MonitorLike = pyudev.Monitor.from_netlink(context, source=source)
    return monitor


def _same_netns(self_ns: str, init_ns: str) -> bool | None:
    try:
        a, b = os.stat(self_ns), os.stat(init_ns)
    except OSError:  # /proc/1 is not ours to inspect (hidepid, no ptrace access)
        return None
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def default_source(
    *,
    control: str = UDEV_CONTROL,
    self_ns: str = "/proc/self/ns/net",
    init_ns: str = "/proc/1/ns/net",
) -> str:
    """"udev" when udevd runs and its multicasts reach us, else "kernel" (see above)."""
    if not os.path.exists(control):
        return "kernel"
    return "udev" if _same_netns(self_ns, init_ns) else "kernel"


class UdevWatcher:
    """Events of ``subsystems``, read without blocking; ``open()`` for the fallible path."""

    def __init__(
        self,
        subsystems: Sequence[str],
        *,
        source: str | None = None,
        context_factory: Callable[[], Any] = _pyudev_context,
        monitor_factory: Callable[[Any, str], MonitorLike] = _pyudev_monitor,
    ) -> None:
        """Raises ``TransportError`` when the monitor cannot be set up."""
        if not subsystems:
            raise ValueError("UdevWatcher needs at least one subsystem")
        self.source = source or default_source()
        if self.source not in SOURCES:
            raise ValueError(f"udev event source {self.source!r} is not one of {SOURCES}")
        self.subsystems = tuple(dict.fromkeys(subsystems))
        self.lost = 0
        try:
            monitor = monitor_factory(context_factory(), self.source)
            for subsystem in self.subsystems:
                # Installed as a socket filter: other subsystems never wake the loop.
                monitor.filter_by(subsystem)
            monitor.start()
        except (OSError, ImportError) as exc:
            raise TransportError(
                f"cannot watch {self.source} events of {', '.join(self.subsystems)}: {exc}"
            ) from exc
        self._monitor: MonitorLike | None = monitor

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
        return self._monitor is None

    def fileno(self) -> int:
        if self._monitor is None:
            raise TransportError("udev watcher is closed")
        return self._monitor.fileno()

    def drain(self, limit: int = DRAIN_LIMIT) -> list[UdevEvent]:
        """The queued events (at most ``limit``), oldest first; [] when none.

        An overflowed receive buffer means events were lost: that is reported as one
        event with action ``OVERFLOW`` so that callers which look again on any event
        do the right thing. Other receive errors raise ``TransportError``.
        """
        if self._monitor is None:
            return []
        events: list[UdevEvent] = []
        while len(events) < limit:
            try:
                device = self._monitor.poll(timeout=0)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1
                    events.append(UdevEvent(OVERFLOW, "", "", ""))
                    continue
                raise TransportError(f"reading udev events failed: {exc}") from exc
            if device is None:
                break
            event = UdevEvent.from_device(device)
            # libudev applies the filter already (kernel-source events in user space,
            # after its socket filter let them through); checked again so that every
            # monitor, whatever its filtering, gives the same answer.
            if event.subsystem in self.subsystems:
                events.append(event)
        return events

    def close(self) -> None:
        """Release the socket (pyudev closes it when the last reference goes)."""
        self._monitor = None


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
            log.debug("uevent: %s %s %s", e.action, e.subsystem, e.sys_name or e.sys_path)
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
