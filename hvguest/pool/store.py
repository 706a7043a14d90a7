"""The five pools of a directory, the per-process registry of open files, our own keys."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from hvguest.errors import LocalUsageError
from hvguest.paths import Paths
from hvguest.pool.file import PoolFile
from hvguest.pool.limits import DEFAULT_MAX_RECORDS, LOCK_TIMEOUT, OWN_PREFIX
from hvguest.wire.pool import POOL_COUNT

log = logging.getLogger(__name__)


class PoolRegistry:
    """The pool files one process has open: one ``PoolFile`` (one descriptor) per file.

    POSIX record locks belong to the process and are dropped when *any* of its
    descriptors of the file is closed, so every ``PoolStore`` of a process must share
    one registry. The daemon (or command) that creates it closes it on exit.
    """

    def __init__(self) -> None:
        self._files: dict[str, PoolFile] = {}
        self._lock = threading.Lock()
        self.generation = 0  # bumped by close_all(): stores drop what they cached

    def open(self, paths: Paths, pool: int, *, lock_timeout: float | None = None,
             max_records: int | None = None) -> PoolFile:
        """The PoolFile for pool ``pool`` (0-4) under ``paths.pool_dir``;
        ``lock_timeout``/``max_records`` given here apply to it from now on."""
        if not isinstance(pool, int) or not 0 <= pool < POOL_COUNT:
            raise LocalUsageError(f"KVP pool is {pool!r}, must be 0..{POOL_COUNT - 1}")
        path = os.path.abspath(paths.pool_file(pool))
        with self._lock:
            pf = self._files.get(path)
            if pf is None:
                pf = self._files[path] = PoolFile(path, pool, proc=paths.proc)
            if lock_timeout is not None:
                pf.lock_timeout = lock_timeout
            if max_records is not None:
                pf.max_records = max_records
            return pf

    def close_all(self) -> None:
        """Close every descriptor; a later ``open`` starts afresh."""
        with self._lock:
            for pf in self._files.values():
                pf.close()
            self._files.clear()
            self.generation += 1


@dataclass
class PoolStore:
    """The five pools of one pool directory, opened through the process's registry
    with this store's lock timeout and record limit."""

    paths: Paths
    registry: PoolRegistry
    lock_timeout: float = field(default=LOCK_TIMEOUT, kw_only=True)
    max_records: int = field(default=DEFAULT_MAX_RECORDS, kw_only=True)
    _pools: dict[int, PoolFile] = field(default_factory=dict, init=False, repr=False)
    _generation: int = field(default=-1, init=False, repr=False)  # -1: nothing cached yet

    def pool(self, pool: int) -> PoolFile:
        # Cached: this is on every host request. The registry's close_all() drops the
        # cache so that a process never ends up with two PoolFiles (two fds) for one file.
        if self._generation != self.registry.generation:
            self._pools = {}
            self._generation = self.registry.generation
        pf = self._pools.get(pool)
        if pf is None:
            pf = self._pools[pool] = self.registry.open(
                self.paths, pool, lock_timeout=self.lock_timeout, max_records=self.max_records
            )
        return pf

    def open_all(self) -> list[PoolFile]:
        """Open (creating if needed, mode 0644) all five files, as hv_kvp_daemon does."""
        pools = [self.pool(n) for n in range(POOL_COUNT)]
        for pf in pools:
            pf.writable  # noqa: B018 - opens (and creates) the file
        return pools

    def get(self, pool: int, key: str) -> str | None:
        return self.pool(pool).get(key)

    def set(self, pool: int, key: str, value: str, *, unsafe: bool = False) -> None:
        self.pool(pool).set(key, value, unsafe=unsafe)

    def delete(self, pool: int, key: str) -> bool:
        return self.pool(pool).delete(key)

    def items(self, pool: int) -> list[tuple[str, str]]:
        return self.pool(pool).items()

    def item(self, pool: int, index: int) -> tuple[str, str] | None:
        return self.pool(pool).item(index)


class OwnKeys:
    """Keys this machine's hvguest publishes (prefix ``hvguest.``), kept alive.

    cloud-init truncates pool 1 once per boot and other tools may rewrite it; ``check()``
    (call it periodically; it is a single stat() when nothing changed) puts back what is
    missing. It never touches keys without our prefix.
    """

    def __init__(self, pool_file: PoolFile, *, prefix: str = OWN_PREFIX) -> None:
        self.pool_file = pool_file
        self.prefix = prefix
        self.wanted: dict[str, str] = {}
        self.republished = 0

    def publish(self, key: str, value: str) -> None:
        if not key.startswith(self.prefix):
            raise LocalUsageError(
                f"KVP key {key!r} lacks the {self.prefix!r} prefix (pool {self.pool_file.pool})"
            )
        self.wanted[key] = value
        self.pool_file.set(key, value)

    def withdraw(self, key: str) -> None:
        self.wanted.pop(key, None)
        self.pool_file.delete(key)

    def check(self) -> int:
        """Re-set missing or changed keys; returns how many were written."""
        missing = self.pool_file.missing(self.wanted)
        for key, value in missing.items():
            self.pool_file.set(key, value)
        if missing:
            self.republished += len(missing)
            log.info(
                "republished %d hvguest key(s) in %s",
                len(missing),
                self.pool_file.path,
                extra={"HVGUEST_POOL": self.pool_file.pool},
            )
        return len(missing)
