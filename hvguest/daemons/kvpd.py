"""hvguest-kvpd: the Hyper-V Data Exchange (KVP) daemon.

Registers on /dev/vmbus/hv_kvp, answers the host's GET/SET/DELETE/ENUMERATE on the
pool files and its GET_IP_INFO/SET_IP_INFO on the network, keeps hvguest's own keys
in pool 1 alive, and publishes its state for ``hvguestctl status``.

One request at a time, on the loop thread: the kernel never sends the next request
before our reply, and SIGTERM is only acted on between callbacks, so a request that
has started is always answered and a pool write is never cut short by our own stop.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from hvguest import __version__
from hvguest.backoff import Backoff
from hvguest.daemon import Runtime, Timer
from hvguest.daemons.common import daemon_arg_parser, start_daemon
from hvguest.errors import HvGuestError, TransportError
from hvguest.kvp.autopool import AutoPool
from hvguest.kvp.ipinfo import IpInfoSource
from hvguest.kvp.netlink import NetlinkReader
from hvguest.kvp.settings import KvpSettings, nic_excluded, nic_rank
from hvguest.log import Throttle
from hvguest.paths import Paths
from hvguest.pool import OwnKeys, PoolStore, close_all
from hvguest.roles.kvp import ApplyIpConfig, KvpRole, Log, PoolChanged, Result
from hvguest.state import StatePublisher
from hvguest.transport.chardev import kvp_transport
from hvguest.transport.udev import EventSource, EventTrigger, UdevEvent, UdevWatcher
from hvguest.vss.record import read_record, record_path
from hvguest.wire.kvp import KvpIpInfo, KvpPool, kvp_reply
from hvguest.wire.pool import POOL_RECORD_SIZE
from hvguest.wire.status import HvStatus

log = logging.getLogger(__name__)

SERVICE = "kvp"
VERSION_KEY = "hvguest.version"
STATE_PERIOD = 1.0
STATUS_PERIOD = 5.0
LOG_PERIOD = 60.0
READ_SIZE = 16384
# Interfaces coming, going or renamed may change what the host name resolves to. The
# first refresh follows the burst of events; the second catches the address and DNS
# search domain a DHCP client configures some seconds after the interface appeared
# (address changes are rtnetlink notifications, not device events).
FQDN_EVENT_DELAY = 2.0
FQDN_FOLLOW_UP = 30.0
FREEZE_RECORD_MAX_AGE = (
    20 * 60.0
)  # VSS freezes end within 15 min (kernel limit)  # the kernel's own KVP receive buffer


def frozen_mount(paths: Paths, path: str) -> str | None:
    """The mount point holding ``path`` if hvguest-vssd has it frozen right now."""
    try:
        st = os.stat(record_path(paths))
    except OSError:
        return None  # the usual case: one failed stat()
    if time.time() - st.st_mtime > FREEZE_RECORD_MAX_AGE:
        return None  # left over from a crash long ago; freezes never last this long
    record = read_record(paths) or {}
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    for mount in record.get("mounts") or []:
        point = mount.get("mount_point") if isinstance(mount, dict) else None
        try:
            if isinstance(point, str) and os.stat(point).st_dev == dev:
                return point
        except OSError:
            continue
    return None


class DaemonData:
    """The KvpData the role looks things up in: pools, AUTO items, adapters."""

    def __init__(self, store: PoolStore, auto: AutoPool, ipinfo: IpInfoSource) -> None:
        self.store = store
        self.auto = auto
        self.ipinfo = ipinfo

    def get(self, pool: int, key: str) -> str | None:
        return self.store.get(pool, key)

    def set(self, pool: int, key: str, value: str) -> None:
        self.check_not_frozen()
        # The host may store what a record can hold; host-safe limits are for us.
        self.store.set(pool, key, value, unsafe=True)

    def delete(self, pool: int, key: str) -> bool:
        self.check_not_frozen()
        return self.store.delete(pool, key)

    def check_not_frozen(self) -> None:
        """Refuse a write at once while a backup holds the pool directory's filesystem
        frozen: the write would block until the thaw, far past the kernel's 30 s."""
        point = frozen_mount(self.store.paths, self.store.paths.pool_dir)
        if point is not None:
            raise HvGuestError(
                f"KVP pool directory {self.store.paths.pool_dir} is on {point}, frozen for"
                " a backup; not writing until it is thawed"
            )

    def item(self, pool: int, index: int) -> tuple[str, str] | None:
        return self.store.item(pool, index)

    def auto_items(self) -> Sequence[tuple[str, str]]:
        return self.auto.items()

    def ip_info(self, mac: str, addr_family: int) -> KvpIpInfo | None:
        try:
            return self.ipinfo.ip_info(mac, addr_family)
        except OSError as exc:
            raise HvGuestError(f"cannot read the addresses of {mac} over netlink: {exc}") from exc


class KvpService:
    """Transport + role + stores + published state for one daemon."""

    def __init__(
        self,
        paths: Paths,
        settings: KvpSettings,
        runtime: Runtime,
        *,
        transport: Any = None,
        clock: Callable[[], float] = time.monotonic,
        udev: EventSource | None = None,
    ) -> None:
        """``udev``: network interface events (``net_watcher()``), or None: the FQDN is
        then refreshed every ``fqdn_refresh`` seconds only."""
        self.paths = paths
        self.settings = settings
        self.runtime = runtime
        self.clock = clock
        if transport is None:
            transport = kvp_transport(paths)
            # Read more than a message can be: an oversized one is then answered with
            # HV_E_FAIL instead of failing the read (EINVAL) and forcing a re-register.
            transport.read_size = READ_SIZE
        self.transport = transport
        self.store = PoolStore(
            paths, lock_timeout=settings.lock_timeout, max_records=settings.max_records
        )
        reader = NetlinkReader()
        self.auto = AutoPool(
            paths,
            version=lambda: self.role.version,
            exclude=lambda name: nic_excluded(settings, name),
            rank=lambda name: nic_rank(settings, name),
            reader=reader,
        )
        self.data = DaemonData(self.store, self.auto, IpInfoSource(paths, reader))
        self.role = KvpRole(self.data)
        self._netconfig: Any = None
        self.own = OwnKeys(self.store.pool(KvpPool.GUEST))
        self.state = StatePublisher(SERVICE, paths)
        self._throttle = Throttle(LOG_PERIOD, clock)
        self.backoff = Backoff()  # re-registration: 0.1 s doubling to 30 s
        self._reopen_timer: Timer | None = None
        self._dirty = True
        self._stopping = False
        self.udev = udev
        self.interface_events: EventTrigger | None = None
        self._fqdn_follow_up: Timer | None = None

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
        self.transport.open()
        self._registered()
        self.runtime.on_stop(self.stop)
        self.runtime.call_every(self.settings.fqdn_refresh, self.auto.fqdn.refresh)
        if self.udev is not None:
            self.interface_events = EventTrigger(
                self.runtime, self.udev, self._interfaces_changed, delay=FQDN_EVENT_DELAY,
                wanted=_interface_event, what="interface changes for the FQDN")
        self.runtime.call_every(self.settings.republish_interval, self._republish)
        self.runtime.call_every(STATE_PERIOD, self._publish_if_dirty)
        self.runtime.call_every(STATUS_PERIOD, self._notify_status)
        if self.settings.publish_version:
            try:
                self.own.publish(VERSION_KEY, f"hvguest {__version__}")
            except HvGuestError as exc:
                log.warning("cannot publish %s in pool 1: %s", VERSION_KEY, exc)
        self.state.update(state="ready", device=getattr(self.transport, "path", None))
        self._publish()

    def _registered(self) -> None:
        version = getattr(self.transport, "version", None) or "Unknown version"
        self.role.registered(version)
        self.runtime.add_reader(self.transport, self.on_readable)
        log.info(
            "registered with %s, protocol version %s", getattr(self.transport, "path", "?"), version
        )

    def stop(self) -> None:
        self._stopping = True
        if self._reopen_timer is not None:
            self._reopen_timer.cancel()
        self.state.update(state="stopped")
        self._publish()
        self.transport.close()
        close_all()

    def status_text(self) -> str:
        c = self.role.counters
        return f"{c.requests} request(s), {c.failures} failed; protocol {self.role.version}"

    def netconfig(self) -> Any:
        """Loaded on the first SET_IP_INFO: subprocess and friends are not needed before."""
        if self._netconfig is None:
            from hvguest.kvp.netconfig import NetConfigurator

            self._netconfig = NetConfigurator(
                self.paths, stack=self.settings.network_stack, timeout=self.settings.apply_timeout
            )
        return self._netconfig

    # -- device --------------------------------------------------------------

    def on_readable(self) -> None:
        try:
            data = self._read()
        except TransportError as exc:
            self._device_failed(exc)
            return
        if not data:
            return
        try:
            result = self.role.handle(data, self.clock())
        except Exception:
            # A bug must not leave the host waiting 30 s for nothing: answer, then log.
            log.exception("KVP request (operation %d) failed unexpectedly", data[0] if data else -1)
            self._write(kvp_reply(data, HvStatus.HV_E_FAIL))
            return
        self.dispatch(result)

    def _read(self) -> bytes:
        """One message; the loop's poll() just reported it.

        transport.read_packet() would poll() once more first, and on the device every
        poll() is a round trip into the driver: reading at once halves the syscalls
        per request. One message is queued, so the read cannot block.
        """
        if not getattr(self.transport, "is_open", False) or not hasattr(
            self.transport, "read_size"
        ):
            return bytes(self.transport.read_packet())
        try:
            data = os.read(self.transport.fileno(), READ_SIZE)
        except (InterruptedError, BlockingIOError):
            return b""
        except OSError as exc:
            raise TransportError(f"{self.transport.path}: read failed: {exc.strerror}") from exc
        if not data and self.transport.is_socket:
            raise TransportError(f"{self.transport.path}: peer closed the connection")
        return data

    def dispatch(self, result: Result) -> None:
        for action in result.actions:
            if isinstance(action, Log):
                self._log(action)
            elif isinstance(action, PoolChanged):
                self._dirty = True
            elif isinstance(action, ApplyIpConfig):
                try:
                    outcome = self.netconfig().apply(action.config)
                    status, detail = int(outcome.status), str(outcome.detail)
                except Exception as exc:  # the reply must go out whatever happened
                    log.exception("applying the host's IP settings failed")
                    status, detail = HvStatus.HV_E_FAIL, f"internal error: {exc}"
                self.dispatch(self.role.ip_config_done(status, detail, self.clock()))
                return
        if result.reply is None:
            return
        if result.status not in (HvStatus.HV_S_OK, HvStatus.HV_S_CONT) or log.isEnabledFor(
            logging.DEBUG
        ):
            self.state.record_op(result.op, result.status_name)
            self._dirty = True
        self._write(result.reply)

    def _write(self, reply: bytes) -> None:
        try:
            self.transport.write_packet(reply)
        except TransportError as exc:
            self._device_failed(exc)
            return
        self.backoff.healthy()  # a request served: the next failure starts over

    def _log(self, action: Log) -> None:
        show, suppressed = self._throttle.should_log((action.message, action.level, action.args))
        if not show:
            return
        message = action.message + (f" ({suppressed} similar not shown)" if suppressed else "")
        extra = {"HVGUEST_POOL": action.pool} if action.pool is not None else None
        log.log(action.level, message, *action.args, extra=extra)
        if action.level >= logging.ERROR:
            self.state.record_error(message % action.args if action.args else message)

    def _device_failed(self, exc: Exception) -> None:
        show, suppressed = self._throttle.should_log(("device", type(exc)))
        if show:
            log.warning(
                "%s; re-registering%s",
                exc,
                f" ({suppressed} similar not shown)" if suppressed else "",
            )
        self.runtime.remove_reader(self.transport)
        if self.role.state.name != "UNREGISTERED":
            self.role.lost()
        self.transport.close()
        self.state.update(state="re-registering")
        self._dirty = True
        # Not at once: a device that opens and fails again must not spin.
        self._reopen_timer = self.runtime.call_later(self.backoff.next_delay(), self._reopen)

    def _reopen(self) -> None:
        self._reopen_timer = None
        if self._stopping:
            return
        try:
            self.transport.open()
        except TransportError as exc:
            delay = self.backoff.next_delay()
            show, _ = self._throttle.should_log(("reopen", str(exc)))
            if show:
                log.error("cannot re-register: %s; retrying in %g s", exc, delay)
            self.state.record_error(str(exc), "the KVP device is back once hv_utils is loaded")
            self._reopen_timer = self.runtime.call_later(delay, self._reopen)
            return
        self._registered()
        self.state.update(state="ready")
        self.state.clear_error()
        self._dirty = True

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
            show, _ = self._throttle.should_log(("republish", type(exc)))
            if show:
                log.warning("cannot republish hvguest keys in pool 1: %s", exc)

    def _details(self) -> dict[str, Any]:
        pools = {}
        for n in range(5):
            pf = self.store.pool(n)
            try:
                count = pf.record_count()
                pools[str(n)] = {
                    "records": count,
                    "bytes": count * POOL_RECORD_SIZE,
                    "path": pf.path,
                    "max_records": pf.max_records,
                }
            except HvGuestError as exc:
                pools[str(n)] = {"error": str(exc), "path": pf.path}
            if pf.lock_holder is not None:
                # Who made the last host request on this pool give up (status shows it).
                pools[str(n)]["lock_holder"] = dict(pf.lock_holder)
        c = self.role.counters
        last = self.role.last
        return {
            "protocol_version": self.role.version,
            "requests": c.requests,
            "failures": c.failures,
            "by_op": dict(c.by_op),
            "last_request": None if last is None else self._last_request(last),
            "pools": pools,
            "republished_keys": self.own.republished,
            "fqdn": self.auto.fqdn.value,
        }

    def _last_request(self, last: tuple[str, str, float]) -> dict[str, str]:
        op, result, at = last
        wall = time.time() - (self.clock() - at)
        stamp = (
            datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )
        return {"op": op, "result": result, "time": stamp}

    def _publish(self) -> None:
        details = self._details()
        # Every request updates the role; the document follows at most once a second
        # ("recent" keeps the failures, recorded as they happen).
        if details["last_request"] is not None:
            self.state.update(last_op=dict(details["last_request"], detail=""))
        self.state.update(details=details)
        self.state.publish()
        self._dirty = False

    def _publish_if_dirty(self) -> None:
        if frozen_mount(self.paths, self.paths.run) is not None:
            return  # writing the state file would block until the thaw
        if self._dirty or self.role.counters.requests != self.state.doc["details"].get("requests"):
            self._publish()

    def _notify_status(self) -> None:
        self.runtime.status(self.status_text())


def _interface_event(event: UdevEvent) -> bool:
    return event.action in ("add", "remove", "move")


def net_watcher() -> UdevWatcher | None:
    """Network interface events, or None where they cannot be received."""
    return UdevWatcher.open(["net"])


def main(argv: list[str] | None = None) -> int:
    parser = daemon_arg_parser("hvguest-kvpd", "Hyper-V Data Exchange (KVP) daemon.")
    args = parser.parse_args(argv)
    paths, config = start_daemon(SERVICE, args)
    settings = config.get(KvpSettings)
    runtime = Runtime("hvguest-kvpd")
    service = KvpService(paths, settings, runtime, udev=net_watcher())
    try:
        service.start()
    except (TransportError, HvGuestError) as exc:
        log.error("%s", exc)
        if service.udev is not None:
            service.udev.close()
        service.state.record_error(str(exc))
        service.state.update(state="failed")
        service.state.publish()
        runtime.close()
        close_all()
        return 1
    runtime.ready(f"registered with {service.transport.path}, protocol {service.role.version}")
    try:
        return runtime.run()
    finally:
        runtime.close()


if __name__ == "__main__":
    sys.exit(main())
