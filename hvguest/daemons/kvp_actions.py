"""hvguest-kvpd's side of the KVP role: the read-only view it looks things up in, and
the executor that carries out its actions (pool writes, IP settings, log lines)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hvguest.daemons.kvp_state import frozen_mount
from hvguest.errors import HvGuestError
from hvguest.kvp.autopool import AutoPool
from hvguest.kvp.ipinfo import IpInfoSource
from hvguest.log import Throttle
from hvguest.paths import Paths
from hvguest.pool import PoolBusyError, PoolFullError, PoolStore
from hvguest.roles.kvp import (
    ApplyIpConfig,
    DeletePool,
    IpApplied,
    Log,
    PoolDone,
    PoolFailed,
    WritePool,
)
from hvguest.state import StatePublisher
from hvguest.vss.record import record_path
from hvguest.wire.kvp import KvpIpInfo
from hvguest.wire.status import HvStatus

if TYPE_CHECKING:
    from hvguest.kvp.netconfig import NetConfigurator

log = logging.getLogger("hvguest.daemons.kvpd")
# Outcomes are frozen: one object each instead of one per request.
_WRITTEN, _ABSENT = PoolDone(True), PoolDone(False)


class PoolView:
    """The ``KvpView`` the role reads through: pools, AUTO items, adapters."""

    def __init__(self, store: PoolStore, auto: AutoPool, ipinfo: IpInfoSource) -> None:
        self.store = store
        self.auto = auto
        self.ipinfo = ipinfo

    def get(self, pool: int, key: str) -> str | None:
        return self.store.pool(pool).get(key)

    def item(self, pool: int, index: int) -> tuple[str, str] | None:
        return self.store.pool(pool).item(index)

    def auto_items(self) -> Sequence[tuple[str, str]]:
        return self.auto.items()

    def ip_info(self, mac: str, addr_family: int) -> KvpIpInfo | None:
        try:
            return self.ipinfo.ip_info(mac, addr_family)
        except OSError as exc:
            raise HvGuestError(f"cannot read the addresses of {mac} over netlink: {exc}") from exc


@dataclass
class KvpActions:
    """Carries out what the role asks for and says how it went. ``netconfig`` gives
    the IP configurator (loaded on the first SET_IP_INFO); ``throttle`` limits
    repeated log lines; errors are also recorded in ``state``."""

    paths: Paths
    store: PoolStore
    state: StatePublisher
    throttle: Throttle
    netconfig: Callable[[], NetConfigurator]

    def __post_init__(self) -> None:
        self._freeze_record = record_path(self.paths)

    def write(self, action: WritePool | DeletePool) -> PoolDone | PoolFailed:
        """One SET or DELETE on a pool file; nothing written on failure."""
        try:
            self.check_not_frozen()
            pf = self.store.pool(action.pool)
            if isinstance(action, WritePool):
                # The host may store what a record can hold; host-safe limits are for us.
                pf.set(action.key, action.value, unsafe=True)
                return _WRITTEN
            return _WRITTEN if pf.delete(action.key) else _ABSENT
        except PoolFullError as exc:
            return PoolFailed(str(exc), "full")
        except PoolBusyError as exc:
            return PoolFailed(str(exc), "busy")
        except HvGuestError as exc:
            return PoolFailed(str(exc), "error")
        except Exception as exc:  # a bug must not leave the host waiting: answer it
            log.exception("KVP pool %d: write failed unexpectedly", action.pool)
            return PoolFailed(f"internal error: {exc}", "error")

    def check_not_frozen(self) -> None:
        """Refuse a write at once while a backup holds the pool directory's filesystem
        frozen: the write would block until the thaw, far past the kernel's 30 s."""
        if not os.access(self._freeze_record, os.F_OK):
            return  # the usual case, on every SET: no freeze (and no exception to build)
        point = frozen_mount(self.paths, self.paths.pool_dir)
        if point is not None:
            raise HvGuestError(
                f"KVP pool directory {self.paths.pool_dir} is on {point}, frozen for"
                " a backup; not writing until it is thawed"
            )

    def apply(self, action: ApplyIpConfig) -> IpApplied:
        """The host's SET_IP_INFO, applied by the configured network stack."""
        try:
            outcome = self.netconfig().apply(action.config)
            return IpApplied(int(outcome.status), str(outcome.detail))
        except Exception as exc:  # the reply must go out whatever happened
            log.exception("applying the host's IP settings failed")
            return IpApplied(HvStatus.HV_E_FAIL, f"internal error: {exc}")

    def log(self, action: Log) -> None:
        """One line, once per period for lines that repeat; errors also go to the
        state file."""
        show, suppressed = self.throttle.should_log((action.message, action.level, action.args))
        if not show:
            return
        message = action.message + (f" ({suppressed} similar not shown)" if suppressed else "")
        extra = {f"HVGUEST_{name}": value for name, value in action.fields.items()} or None
        log.log(action.level, message, *action.args, extra=extra)
        if action.level >= logging.ERROR:
            self.state.record_error(message % action.args if action.args else message)
