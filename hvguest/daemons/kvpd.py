"""hvguest-kvpd: the Hyper-V Data Exchange (KVP) daemon.

Registers on /dev/vmbus/hv_kvp, answers the host's GET/SET/DELETE/ENUMERATE on the
pool files and its GET_IP_INFO/SET_IP_INFO on the network, keeps hvguest's own keys
in pool 1 alive, and publishes its state for ``hvguestctl status``.

The daemon is the KVP role (``roles/kvp.py``), its action executor
(``daemons/kvp_actions.py``) and its settings, on the shared channel runner
(``daemons/channel.py``: open, read, send, re-open, state file, sd_notify).

One request at a time, on the loop thread: the kernel never sends the next request
before our reply, and SIGTERM is only acted on between callbacks, so a request that
has started is always answered and a pool write is never cut short by our own stop.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hvguest import __version__
from hvguest.daemon import Runtime, Timer
from hvguest.daemons.channel import Channel, run_daemon
from hvguest.daemons.common import daemon_arg_parser, start_daemon
from hvguest.daemons.kvp_actions import KvpActions, PoolView
from hvguest.daemons.kvp_state import frozen_mount, last_request, pool_details
from hvguest.direct.publish import PUBLISH_KEY as DIRECT_KEY
from hvguest.direct.publish import publish_value as direct_value
from hvguest.direct.settings import DirectSettings
from hvguest.errors import HvGuestError, TransportError
from hvguest.kvp.autopool import AutoPool
from hvguest.kvp.ipinfo import IpInfoSource
from hvguest.kvp.netlink import NetlinkReader
from hvguest.kvp.settings import KvpSettings, nic_excluded, nic_rank
from hvguest.paths import Paths
from hvguest.pool import OwnKeys, PoolRegistry, PoolStore
from hvguest.roles.kvp import (
    Action,
    ApplyIpConfig,
    DeletePool,
    KvpRole,
    KvpState,
    Log,
    Outcome,
    Step,
    WritePool,
)
from hvguest.state import StatePublisher
from hvguest.transport.base import Transport
from hvguest.transport.chardev import kvp_transport
from hvguest.transport.udev import EventSource, EventTrigger, UdevEvent, UdevWatcher
from hvguest.wire.kvp import KvpPool, kvp_reply
from hvguest.wire.status import HvStatus

if TYPE_CHECKING:
    from hvguest.kvp.netconfig import NetConfigurator

log = logging.getLogger(__name__)

SERVICE = "kvp"
VERSION_KEY = "hvguest.version"
# Read more than a message can be: an oversized one is then answered with HV_E_FAIL
# instead of failing the read (EINVAL) and forcing a re-register.
READ_SIZE = 16384
# Interfaces coming, going or renamed may change what the host name resolves to. The
# first refresh follows the burst of events; the second catches the address and DNS
# search domain a DHCP client configures some seconds after the interface appeared
# (address changes are rtnetlink notifications, not device events).
FQDN_EVENT_DELAY = 2.0
FQDN_FOLLOW_UP = 30.0
_ANSWERED = (HvStatus.HV_S_OK, HvStatus.HV_S_CONT)


class KvpService:
    """The KVP role, its executor and its stores, served on one channel."""

    def __init__(
        self,
        paths: Paths,
        settings: KvpSettings,
        runtime: Runtime,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        udev: EventSource | None = None,
        registry: PoolRegistry | None = None,
        direct: DirectSettings | None = None,
    ) -> None:
        """``udev``: network interface events (``net_watcher()``), or None: the FQDN is
        then refreshed every ``fqdn_refresh`` seconds only. ``registry``: the process's
        open pool files (a new one by default; closed when the daemon stops)."""
        self.paths = paths
        self.settings = settings
        self.runtime = runtime
        self.clock = clock
        if transport is None:
            device = kvp_transport(paths)
            device.read_size = READ_SIZE
            transport = device
        self.state = StatePublisher(SERVICE, paths)
        self.channel = Channel(
            "hvguest-kvpd", runtime, transport, state=self.state, clock=clock,
            remedy="the KVP device is back once hv_utils is loaded",
        )
        # The state file lives on /run: never write it while a backup holds that frozen.
        self.channel.can_publish = lambda: frozen_mount(paths, paths.run) is None
        self.registry = registry if registry is not None else PoolRegistry()
        self.store = PoolStore(
            paths, self.registry,
            lock_timeout=settings.lock_timeout, max_records=settings.max_records,
        )
        reader = NetlinkReader()
        self.auto = AutoPool(
            paths,
            version=lambda: self.role.version,
            exclude=lambda name: nic_excluded(settings, name),
            rank=lambda name: nic_rank(settings, name),
            reader=reader,
        )
        self.role = KvpRole(PoolView(self.store, self.auto, IpInfoSource(paths, reader)))
        self.actions = KvpActions(paths, self.store, self.state, self.channel.throttle,
                                  self.netconfig)
        self._netconfig: NetConfigurator | None = None
        self.own = OwnKeys(self.store.pool(KvpPool.GUEST))
        self.udev = udev
        self.direct = direct or DirectSettings()
        self.interface_events: EventTrigger | None = None
        self._fqdn_follow_up: Timer | None = None

    @property
    def transport(self) -> Transport:
        return self.channel.transport

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Open the pools, look up the FQDN (bounded), register. TransportError if absent."""
        try:
            self.store.open_all()
        except HvGuestError as exc:
            # Still serve what needs no pool file (pool 2, IP information); pool
            # requests fail one by one until the directory is usable.
            log.error("%s; pool requests will fail until this is fixed", exc)
            self.state.record_error(str(exc), f"make {self.paths.pool_dir} writable by root")
        self.auto.fqdn.refresh(wait=self.settings.fqdn_timeout)
        self.channel.start(self)
        self.runtime.on_stop(self.stop)
        self.runtime.call_every(self.settings.fqdn_refresh, self.auto.fqdn.refresh)
        if self.udev is not None:
            self.interface_events = EventTrigger(
                self.runtime, self.udev, self._interfaces_changed, delay=FQDN_EVENT_DELAY,
                wanted=_interface_event, what="interface changes for the FQDN")
        self.runtime.call_every(self.settings.republish_interval, self._republish)
        if self.settings.publish_version:
            try:
                self.own.publish(VERSION_KEY, f"hvguest {__version__}")
            except HvGuestError as exc:
                log.warning("cannot publish %s in pool 1: %s", VERSION_KEY, exc)
            self.channel.dirty = True
        self._publish_direct()

    def _publish_direct(self) -> None:
        """hvguest.direct in pool 1 while direct access is on (kept alive like
        hvguest.version); withdrawn when off. Read at start: ``hvguestctl direct
        enable|disable`` restart this daemon."""
        value = direct_value(self.direct)
        try:
            if value is not None:
                self.own.publish(DIRECT_KEY, value)
            elif self.own.pool_file.get(DIRECT_KEY) is not None:
                self.own.withdraw(DIRECT_KEY)
        except HvGuestError as exc:
            log.warning("cannot update %s in pool 1: %s", DIRECT_KEY, exc)

    def stop(self) -> None:
        self.channel.close()
        self.state.update(state="stopped")
        self.channel.publish()
        self.close()

    def close(self) -> None:
        """Release the pool files and the event source (also after a failed start)."""
        if self.udev is not None:
            self.udev.close()
        self.registry.close_all()

    def netconfig(self) -> NetConfigurator:
        """Loaded on the first SET_IP_INFO: subprocess and friends are not needed before."""
        if self._netconfig is None:
            from hvguest.kvp.netconfig import NetConfigurator

            self._netconfig = NetConfigurator(
                self.paths, stack=self.settings.network_stack, timeout=self.settings.apply_timeout
            )
        return self._netconfig

    # -- ChannelService ------------------------------------------------------------

    def registered(self, version: str) -> None:
        self.role.registered(version)

    def lost(self, error: TransportError) -> None:
        if self.role.state is not KvpState.UNREGISTERED:
            self.role.lost()

    def serve(self, message: bytes) -> None:
        """One request: the role's step, its actions carried out, the reply sent."""
        try:
            step = self.role.handle(message, self.clock())
            if step.actions:  # GET and ENUMERATE usually have none
                step = self._carry_out(step)
        except Exception:
            # A bug must not leave the host waiting 30 s for nothing: answer, then log.
            log.exception("KVP request (operation %d) failed unexpectedly",
                          message[0] if message else -1)
            if self.role.state is not KvpState.UNREGISTERED:
                self.role.abandon()  # answered here: the next request is new
            self.channel.send(kvp_reply(message, HvStatus.HV_E_FAIL))
            return
        self.channel.dirty = True  # the counters moved: published within a second
        if self.role.last_status not in _ANSWERED or log.isEnabledFor(logging.DEBUG):
            last = self.role.last
            if last is not None:
                self.state.record_op(last[0], last[1])
        if step.reply is not None:
            self.channel.send(step.reply)

    def _carry_out(self, step: Step[Action]) -> Step[Action]:
        """Run the step's actions; an action whose outcome the reply depends on comes
        back through ``complete()``, whose step is carried out in turn."""
        while True:
            outcome: Outcome | None = None
            for action in step.actions:
                if isinstance(action, (WritePool, DeletePool)):  # a tuple: faster than a union
                    outcome = self.actions.write(action)
                elif isinstance(action, Log):
                    self.actions.log(action)
                elif isinstance(action, ApplyIpConfig):
                    outcome = self.actions.apply(action)
            if outcome is None:
                return step
            step = self.role.complete(outcome, self.clock())

    def details(self) -> dict[str, Any]:
        c = self.role.counters
        last = self.role.last
        request = None if last is None else last_request(*last, self.clock())
        if request is not None:
            # Every request updates the role; the document follows at most once a
            # second ("recent" keeps the failures, recorded as they happen).
            self.state.update(last_op=dict(request, detail=""))
        return {
            "protocol_version": self.role.version,
            "requests": c.requests,
            "failures": c.failures,
            "by_op": dict(c.by_op),
            "failures_by_op": dict(c.failures_by_op),
            "last_request": request,
            "pools": pool_details(self.store),
            "republished_keys": self.own.republished,
            "fqdn": self.auto.fqdn.value,
        }

    def status_text(self) -> str:
        c = self.role.counters
        return f"{c.requests} request(s), {c.failures} failed; protocol {self.role.version}"

    # -- periodic ------------------------------------------------------------

    def _interfaces_changed(self) -> None:
        # Fqdn.refresh() looks up on a thread of its own: the loop never waits for DNS.
        self.auto.fqdn.refresh()
        if self._fqdn_follow_up is None:
            self._fqdn_follow_up = self.runtime.call_later(FQDN_FOLLOW_UP, self._follow_up)

    def _follow_up(self) -> None:
        self._fqdn_follow_up = None
        self.auto.fqdn.refresh()

    def _republish(self) -> None:
        if frozen_mount(self.paths, self.paths.pool_dir) is not None:
            return  # after the thaw
        try:
            self.own.check()
        except HvGuestError as exc:
            show, _ = self.channel.throttle.should_log(("republish", type(exc)))
            if show:
                log.warning("cannot republish hvguest keys in pool 1: %s", exc)


def _interface_event(event: UdevEvent) -> bool:
    return event.action in ("add", "remove", "move")


def net_watcher() -> UdevWatcher | None:
    """Network interface events, or None where they cannot be received."""
    return UdevWatcher.open(["net"])


def main(argv: list[str] | None = None) -> int:
    parser = daemon_arg_parser("hvguest-kvpd", "Hyper-V Data Exchange (KVP) daemon.")
    args = parser.parse_args(argv)
    paths, config = start_daemon(SERVICE, args)
    runtime = Runtime("hvguest-kvpd")
    service = KvpService(paths, config.get(KvpSettings), runtime, udev=net_watcher(),
                         direct=config.get(DirectSettings))
    return run_daemon(
        runtime,
        service.start,
        lambda: f"registered with {service.transport.path}, protocol {service.role.version}",
        state=service.state,
        cleanup=service.close,
    )


if __name__ == "__main__":
    sys.exit(main())
