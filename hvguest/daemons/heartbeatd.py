"""hvguest-heartbeatd: watches the kernel-answered services and reports health.

Heartbeat, shutdown and time sync are answered by hv_utils in the kernel. This
daemon observes them (channel present, driver bound, heartbeat counters
advancing, host clock offset), publishes the guest's application health to
the host as KVP items in pool 1, and publishes its state as service
"heartbeat" for ``hvguestctl status``. Repeating failures are logged once per
``log_period``, not once per poll.

Device events (a channel offered or rescinded, a driver bound, a device node or
interface created) bring a scan of the channels forward to half a second after the
first event; the periodic poll stays, for what no event announces (heartbeat
counters, unit health, the clock's drift) and for machines where events cannot be
received.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hvguest.command import CommandResult
from hvguest.config import load_config
from hvguest.daemon import Runtime, Timer
from hvguest.daemons.channel import run_daemon
from hvguest.daemons.common import daemon_arg_parser, start_daemon
from hvguest.errors import ConfigError, HvGuestError
from hvguest.health.publish import HealthPublisher, StoreFactory, pool_store
from hvguest.health.units import Health, HealthUnavailable, SystemctlProbe, UnitProbe, evaluate
from hvguest.heartbeat.liveness import CONTACT, NO_CONTACT, Liveness
from hvguest.heartbeat.settings import HeartbeatSettings
from hvguest.log import Throttle
from hvguest.paths import Paths
from hvguest.proc import systemd_running
from hvguest.shutdown.hooks import list_hooks
from hvguest.state import StatePublisher, utc_now
from hvguest.timesync import check as timesync
from hvguest.timesync.ptp import ClockOpener
from hvguest.transport.udev import EventSource, EventTrigger, UdevWatcher
from hvguest.vmbus.inventory import Inventory, scan
from hvguest.vmbus.offers import offer_changes, offered_services

log = logging.getLogger(__name__)

SERVICE = "heartbeat"
# vmbus: channels offered and rescinded, drivers bound; misc: /dev/vmbus/hv_* nodes;
# uio: fcopy on uio_hv_generic; ptp: the host clock; net: synthetic network adapters.
WATCHED_SUBSYSTEMS = ("vmbus", "misc", "net", "ptp", "uio")
# Long enough for a burst (a device's channels, driver and nodes) to end in one scan.
RESCAN_DELAY = 0.5


class HeartbeatDaemon:
    """One poll every ``poll_interval``: channels, liveness, clock, health."""

    def __init__(
        self,
        paths: Paths,
        settings: HeartbeatSettings,
        *,
        probe: UnitProbe | None = None,
        store: StoreFactory | None = None,
        clock_opener: ClockOpener | None = None,
        publisher: StatePublisher | None = None,
        monotonic: Callable[[], float] | None = None,
        now: Callable[[], str] = utc_now,
    ) -> None:
        self.paths = paths
        self.settings = settings
        # Unit health needs a service manager; in a container without systemd as PID 1
        # there is nothing to report (an injected probe is always used).
        self.health_enabled = probe is not None or systemd_running(paths)
        if not self.health_enabled:
            log.info("PID 1 is not systemd: application health is not reported")
        self.probe = probe or SystemctlProbe()
        self.health_out = HealthPublisher(store or pool_store(paths))
        self.clock_opener = clock_opener
        self.publisher = publisher or StatePublisher(SERVICE, paths, now=now)
        self.now = now
        throttle_args: tuple[Any, ...] = (monotonic,) if monotonic is not None else ()
        self.throttle = Throttle(settings.log_period, *throttle_args)
        self.liveness = Liveness(settings.stall_threshold)
        self.health: Health | None = None
        self.failing: set[str] = set()
        self.polls = 0
        self.rescans = 0  # scans brought forward by device events
        self.offered: frozenset[str] | None = None  # None until the first scan

    def reconfigure(self, settings: HeartbeatSettings) -> None:
        """New settings (SIGHUP); liveness and failure history are kept."""
        self.settings = settings
        self.liveness.threshold = settings.stall_threshold
        self.throttle.period = settings.log_period

    # -- failures, logged once per period ------------------------------------------

    def fail(self, key: str, message: str, remedy: str = "") -> None:
        show, suppressed = self.throttle.should_log(key)
        if show:
            more = f" ({suppressed} repeats not logged)" if suppressed else ""
            log.warning("%s%s", message, more)
        if key not in self.failing:
            self.failing.add(key)
            self.publisher.record_error(message, remedy)

    def recover(self, key: str, message: str) -> None:
        if key in self.failing:
            self.failing.discard(key)
            self.throttle.reset(key)
            log.info("%s", message)
            if not self.failing:
                self.publisher.clear_error()

    # -- one round --------------------------------------------------------------------

    def poll(self, *, full: bool = True) -> None:
        """One round. ``full=False`` is a scan brought forward by a device event: the
        channels, drivers, offers and clock are read again, but the heartbeat counters
        are not compared and the units are not asked. Stalls are counted in poll
        intervals (an early look would count a host that has simply not sent its next
        heartbeat yet), and a stream of events (a container host's veth interfaces)
        must not cost a systemctl each."""
        if full:
            self.polls += 1
        else:
            self.rescans += 1
        inv = scan(self.paths)
        self._note_offers(inv)
        details: dict[str, Any] = {
            "heartbeat": self._heartbeat(inv, measure=full),
            "shutdown": self._shutdown(inv),
            "timesync": self._timesync(inv),
            "health": self._health() if full else self.publisher.doc["details"].get("health"),
            "polls": self.polls,
        }
        state = "running"
        if details["heartbeat"].get("contact") == NO_CONTACT:
            state = "no contact"
        device = inv.service_device("heartbeat")
        self.publisher.update(state=state, device=device.path if device else None,
                              details=details)
        self.publisher.publish()

    def rescan(self) -> None:
        """A device changed: look again now (see ``poll``)."""
        self.poll(full=False)

    def _note_offers(self, inv: Inventory) -> None:
        """Log each service the host started or stopped offering since the last scan."""
        offered = offered_services(inv)
        if self.offered is not None:
            for line in offer_changes(self.offered, offered):
                log.info("%s", line)
                self.publisher.record_op("offer", "changed", line)
        self.offered = offered

    def _channel(self, inv: Inventory, service: str) -> dict[str, Any]:
        dev = inv.service_device(service)
        if dev is None:
            return {"offered": False, "driver": None}
        return {"offered": True, "driver": dev.driver, "instance": dev.instance,
                "channel_state": dev.state}

    def _heartbeat(self, inv: Inventory, *, measure: bool = True) -> dict[str, Any]:
        out = self._channel(inv, "heartbeat")
        dev = inv.service_device("heartbeat")
        primary = dev.primary if dev is not None else None
        counters = None
        if primary is not None and "interrupts" in primary.counters:
            counters = (primary.counters["interrupts"], primary.counters.get("events", 0))
        before = self.liveness.state
        state = self.liveness.update(counters, self.now()) if measure else before
        out.update(self.liveness.as_dict())
        if counters is not None:
            out["interrupts"], out["events"] = counters
        if dev is None:
            self.fail("heartbeat-channel", "the host does not offer the Heartbeat service",
                      "Enable-VMIntegrationService -VMName <vm> -Name 'Heartbeat'")
        elif dev.driver != "hv_utils":
            self.fail("heartbeat-channel", "heartbeat channel has no hv_utils driver bound",
                      "modprobe hv_utils")
        else:
            self.recover("heartbeat-channel", "heartbeat channel is back")
        if not measure:
            return out
        if state == NO_CONTACT:
            self.fail("heartbeat-contact",
                      f"no contact: heartbeat counters have not moved for "
                      f"{self.liveness.stalls} polls",
                      "check the VM's Heartbeat integration service on the host")
        elif state == CONTACT:
            if before == NO_CONTACT:
                self.publisher.record_op("heartbeat", "ok", "host contact restored")
            self.recover("heartbeat-contact", "heartbeat: contact with the host restored")
        return out

    def _shutdown(self, inv: Inventory) -> dict[str, Any]:
        out = self._channel(inv, "shutdown")
        hooks = list_hooks(self.paths)
        out["hooks"] = len(hooks)
        out["hooks_skipped"] = [h.name for h in hooks if not h.usable]
        return out

    def _timesync(self, inv: Inventory) -> dict[str, Any]:
        out = self._channel(inv, "timesync")
        if not out["offered"]:
            return out
        # chronyc is left to hvguestctl: a process every poll is waste, and the unit's
        # sandbox (read-only /run, AF_UNIX only) would refuse its client socket anyway.
        st = timesync.check(self.paths, warn_offset_ms=self.settings.timesync_warn_offset_ms,
                            opener=self.clock_opener, runner=_no_chronyc)
        out.update(st.as_dict())
        out["measured_at"] = self.now()
        if st.error:
            self.fail("timesync-read", f"time sync: {st.error}")
        else:
            self.recover("timesync-read", "time sync: host clock readable again")
        if st.offset_exceeded:
            self.fail("timesync-offset",
                      f"time sync: guest clock is {st.offset_ms:+.1f} ms off the host's "
                      f"(limit {st.warn_offset_ms:g} ms)",
                      "hvguestctl timesync setup")
        elif st.offset_ms is not None:
            self.recover("timesync-offset",
                         f"time sync: offset back within limits ({st.offset_ms:+.1f} ms)")
        return out

    def _health(self) -> dict[str, Any] | None:
        if not self.health_enabled:
            return None
        try:
            health = evaluate(self.probe, self.settings.health_units)
        except HealthUnavailable as exc:
            self.fail("health-probe", f"application health unknown: {exc}")
            self._withdraw()
            self.health = None
            return None
        self.recover("health-probe", "application health readable again")
        if health != self.health:
            log.info("application health: %s (%s)", health.level, health.reason)
            self.publisher.record_op("health", health.level, health.reason)
        self.health = health
        if self.settings.publish_health:
            try:
                self.health_out.publish(health)
            except (OSError, HvGuestError) as exc:
                self.fail("health-publish", f"cannot publish health in KVP pool 1: {exc}",
                          f"check {self.paths.pool_file(1)}")
            else:
                self.recover("health-publish", "health published in KVP pool 1 again")
        return {**health.as_dict(), "published": self.settings.publish_health}

    def _withdraw(self) -> None:
        if not self.settings.publish_health:
            return
        try:
            self.health_out.withdraw()
        except (OSError, HvGuestError) as exc:
            log.debug("cannot withdraw health keys: %s", exc)

    def status_text(self) -> str:
        hb = self.publisher.doc["details"].get("heartbeat", {})
        health = self.health.level if self.health else "unknown"
        return f"host contact: {hb.get('contact', 'unknown')}; application health: {health}"


def _no_chronyc(argv: Sequence[str], timeout: float) -> CommandResult:
    return CommandResult(1, "not asked by the daemon")


def watch_devices(runtime: Runtime, watcher: EventSource | None,
                  rescan: Callable[[], None]) -> EventTrigger | None:
    """Device events call ``rescan`` (debounced); None: the periodic poll alone."""
    if watcher is None:
        return None
    return EventTrigger(runtime, watcher, rescan, delay=RESCAN_DELAY,
                        what="offered services and drivers")


def open_watcher(paths: Paths) -> UdevWatcher | None:
    # Events describe this machine's /sys: another --sys-root (a fixture tree, the
    # simulator's) has none to hear.
    if os.path.realpath(paths.sys) != "/sys":
        return None
    return UdevWatcher.open(WATCHED_SUBSYSTEMS)


class PollSchedule:
    """The daemon's timers and signals: a poll every ``poll_interval``, a scan on device
    events, the settings again on SIGHUP, a "stopped" state file at the end."""

    def __init__(self, runtime: Runtime, daemon: HeartbeatDaemon, config_path: str) -> None:
        self.runtime = runtime
        self.daemon = daemon
        self.config_path = config_path
        self.timer: Timer | None = None

    def start(self) -> None:
        daemon, runtime = self.daemon, self.runtime
        daemon.poll()
        interval = daemon.settings.poll_interval
        self.timer = runtime.call_every(interval, self.tick)
        if watch_devices(runtime, open_watcher(daemon.paths), self.rescan) is None:
            log.debug("no device events: changes are noticed every %g s", interval)
        runtime.on_reload(self.reload)
        runtime.on_stop(self.stopped)

    def tick(self) -> None:
        self.daemon.poll()
        self.runtime.status(self.daemon.status_text())

    def rescan(self) -> None:
        self.daemon.rescan()
        self.runtime.status(self.daemon.status_text())

    def reload(self) -> None:
        try:
            new = load_config(self.config_path).get(HeartbeatSettings)
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the old one: %s", exc)
            return
        if new.poll_interval != self.daemon.settings.poll_interval and self.timer is not None:
            self.timer.cancel()
            self.timer = self.runtime.call_every(new.poll_interval, self.tick)
        self.daemon.reconfigure(new)
        log.info("configuration reloaded from %s", self.config_path)
        self.tick()

    def stopped(self) -> None:
        self.daemon.publisher.update(state="stopped")
        self.daemon.publisher.publish()


def build_parser() -> argparse.ArgumentParser:
    p = daemon_arg_parser("hvguest-heartbeatd", "Watch heartbeat, shutdown and time sync; "
                          "publish application health to the Hyper-V host.", os_etc=True)
    p.add_argument("--once", action="store_true", help="poll once, publish and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        paths, config = start_daemon(SERVICE, args)
    except SystemExit as exc:  # a bad configuration: one line already printed
        return int(exc.code) if isinstance(exc.code, int) else 1
    settings: HeartbeatSettings = config.get(HeartbeatSettings)
    if not os.path.isdir(paths.vmbus_devices):
        log.info("%s does not exist: not a Hyper-V guest, nothing to do", paths.vmbus_devices)
        runtime = Runtime("hvguest-heartbeatd")
        runtime.ready("not a Hyper-V guest: nothing to do")
        runtime.close()
        return 0
    daemon = HeartbeatDaemon(paths, settings)
    if args.once:
        daemon.poll()
        print(daemon.status_text(), file=sys.stderr)
        return 0
    runtime = Runtime("hvguest-heartbeatd")
    schedule = PollSchedule(runtime, daemon, args.config or paths.config_file)
    return run_daemon(runtime, schedule.start, daemon.status_text, state=daemon.publisher)


if __name__ == "__main__":
    sys.exit(main())
