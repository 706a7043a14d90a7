"""Application health in KVP pool 1: ``hvguest.health`` and ``hvguest.health.reason``.

The host reads pool 1 as the VM's GuestExchangeItems. Our two keys are rewritten
only when they change, and put back when they vanish (cloud-init truncates pool 1
at boot). No other key is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from hvguest.health.units import Health
from hvguest.paths import Paths

log = logging.getLogger(__name__)

KEY_HEALTH = "hvguest.health"
KEY_REASON = "hvguest.health.reason"
HEALTH_POOL = 1


class KvpStore(Protocol):
    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> Any: ...


StoreFactory = Callable[[], KvpStore]


def pool_store(paths: Paths, pool: int = HEALTH_POOL) -> StoreFactory:
    """Opens the shared pool store (same locks as every other pool writer)."""

    registry: list[Any] = []  # the process's PoolRegistry, made on first use

    def factory() -> KvpStore:
        from hvguest.pool import PoolRegistry  # the KVP pool module; imported late

        if not registry:
            registry.append(PoolRegistry())
        store: KvpStore = registry[0].open(paths, pool)
        return store

    return factory


class HealthPublisher:
    """Keeps our two keys in pool 1 equal to the last evaluation."""

    def __init__(self, store: StoreFactory) -> None:
        self.store = store
        self.writes = 0

    def publish(self, health: Health) -> bool:
        """True when something was written (changed or missing)."""
        pool = self.store()
        wrote = False
        for key, value in ((KEY_HEALTH, health.level), (KEY_REASON, health.reason)):
            if pool.get(key) != value:
                pool.set(key, value)
                wrote = True
        if wrote:
            self.writes += 1
            log.info("published health %s (%s) in KVP pool %d", health.level, health.reason,
                     HEALTH_POOL)
        return wrote

    def withdraw(self) -> None:
        """Remove our keys (health unknown: say nothing rather than something stale)."""
        pool = self.store()
        for key in (KEY_HEALTH, KEY_REASON):
            if pool.get(key) is not None:
                pool.delete(key)
