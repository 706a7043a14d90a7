"""KVP pool files: ``<pool_dir>/.kvp_pool_0`` .. ``.kvp_pool_4`` (protocol.md §2.4).

Same on-disk format as hv_kvp_daemon: a plain concatenation of 2560-byte records
(``key[512]`` + ``value[2048]``, NUL-terminated UTF-8), insertion order, first match
wins. Other writers share these files: the C daemon (``fcntl`` whole-file write lock),
cloud-init and azure-init (``flock``). We take **both** locks, ``flock`` first, each with
a bounded wait, so we exclude every one of them.

Writes never rewrite the whole file:

* an update is one ``pwrite`` of the whole record at its place;
* an append is one ``pwrite`` of one whole record at the end;
* a delete moves the later records up one by one (one whole-record ``pwrite`` each, in
  order) and then truncates, as hv_kvp_daemon's shift does, without touching the
  records before the deleted one.

Bounds. A pool holds at most ``max_records`` records (``kvp.max_records``, default
DEFAULT_MAX_RECORDS): a new key past it is refused with PoolFullError, which the host
sees as HV_E_FAIL, and nothing is written; updates in place and deletes always work.
Lock waits are bounded (``lock_timeout``); on giving up, the holder is looked up in
``/proc/locks`` and named (pid, user, command) in the error, kept in ``lock_holder``
for ``hvguestctl status``, and while that same process still holds the lock the next
request fails at once instead of waiting again.

File mode: 0644, whatever the umask, like hv_kvp_daemon's files. Readers need it:
``hvguestctl kvp list`` as any user, Microsoft's validation suite (which checks for
0644), and tools that read pool 0/3 for host parameters. The price is that every local
user can read every KVP item (the host must not push secrets through KVP) and can take
a lock on the file; the bounded, holder-naming waits above keep that from stalling the
host. Tightening to 0600 would break those readers for little gain.

A crash in the middle of a delete can leave the last moved record twice, never a record
mixed from two others. A trailing partial record (torn append) is ignored when reading
and cut off under the lock before the next write. The one window left: the kernel
copies a write page by page, so SIGKILL or power loss landing between the two pages of
an in-place update that straddles a page boundary could mix old and new bytes of that
one value; the shared format has no checksum that would let a reader notice.

Caching: each file is parsed once and re-read only when its (inode, size, mtime) changed.
Timestamps have a coarse granularity, so two writes in one clock tick could leave the
same mtime; a signature is therefore trusted only if the mtime was older than
``RACY_NS`` when we read it, or if we wrote the file ourselves and stamped it with an
mtime just below the kernel's (any later write by anyone gets a newer one).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from hvguest.errors import HvGuestError, LocalUsageError
from hvguest.lockholders import LockHolder, find_holders
from hvguest.paths import Paths
from hvguest.wire.pool import (
    POOL_COUNT,
    POOL_KEY_SIZE,
    POOL_RECORD_SIZE,
    POOL_VALUE_SIZE,
    PoolRecord,
)

log = logging.getLogger(__name__)

# Limits for items the host must be able to read back: the kernel cuts enumerated keys
# at 254 and values at 1022 UTF-16 code units, and the host's Data field holds 1024.
HOST_SAFE_KEY_BYTES = 254
HOST_SAFE_VALUE_BYTES = 1022
# What a record can hold at all (field size minus the NUL).
MAX_KEY_BYTES = POOL_KEY_SIZE - 1
MAX_VALUE_BYTES = POOL_VALUE_SIZE - 1

LOCK_TIMEOUT = 5.0
# Far above what the pool's users write: cloud-init's Hyper-V reporting appends a few
# hundred records per boot to pool 1 (and truncates it once per boot), azure-init at
# most 1024 keys, the host a handful in pool 0. 10,000 records are 25.6 MB of disk.
DEFAULT_MAX_RECORDS = 10_000
PATH_CHECK_PERIOD = 1.0
RACY_NS = 50_000_000  # far above any filesystem timestamp tick (jiffies)
OWN_PREFIX = "hvguest."
_BAD_RECORD_LOG_PERIOD = 300.0


class PoolBusyError(HvGuestError):
    """A pool file stayed locked by another writer for longer than the bounded wait."""


class PoolFullError(HvGuestError):
    """A new key would take the pool past its record limit."""


class PoolRecordError(HvGuestError):
    """A record another writer left on disk cannot be decoded (e.g. invalid UTF-8)."""


@dataclass(frozen=True)
class _Signature:
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Signature:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


def check_item(key: str, value: str, *, pool: int, unsafe: bool = False) -> tuple[bytes, bytes]:
    """UTF-8 bytes of ``key`` and ``value``; LocalUsageError naming size and limit.

    Host-safe limits by default (254/1022 bytes); ``unsafe`` allows what a record can
    hold (511/2047), which the host will see truncated.
    """
    key_limit = MAX_KEY_BYTES if unsafe else HOST_SAFE_KEY_BYTES
    value_limit = MAX_VALUE_BYTES if unsafe else HOST_SAFE_VALUE_BYTES
    out = []
    for what, text, limit in (("key", key, key_limit), ("value", value, value_limit)):
        if not isinstance(text, str):
            raise LocalUsageError(
                f"KVP {what} must be text, got {type(text).__name__} (pool {pool})"
            )
        if "\0" in text:
            raise LocalUsageError(f"KVP {what} contains a NUL character (pool {pool})")
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LocalUsageError(
                f"KVP {what} is not valid UTF-8: lone surrogate at character {exc.start}"
                f" (pool {pool})"
            ) from exc
        if len(raw) > limit:
            hard = MAX_KEY_BYTES if what == "key" else MAX_VALUE_BYTES
            hint = ""
            if not unsafe and len(raw) <= hard:
                hint = "; the host would see it cut (--unsafe or kvp.unsafe_sizes allow it)"
            raise LocalUsageError(
                f"KVP {what} is {len(raw)} bytes, limit {limit} (pool {pool}){hint}"
            )
        out.append(raw)
    if not out[0]:
        raise LocalUsageError(f"KVP key is empty (pool {pool})")
    return out[0], out[1]


def _sleep_backoff(delay: float) -> float:
    time.sleep(delay)
    return min(delay * 2, 0.02)


class PoolFile:
    """One pool file: cached records, both locks, record-granular writes.

    Thread-safe. Use ``open_pool()`` so that one process holds one descriptor per file:
    POSIX record locks belong to the process and are dropped when *any* descriptor of
    the file is closed.
    """

    def __init__(
        self,
        path: str,
        pool: int,
        *,
        lock_timeout: float = LOCK_TIMEOUT,
        max_records: int = DEFAULT_MAX_RECORDS,
        proc: str = "/proc",
    ) -> None:
        self.path = path
        self.pool = pool
        self.lock_timeout = lock_timeout
        self.max_records = max_records
        self.proc = proc
        # The process that made the last lock wait give up (for status), and its pid
        # with the lock family while it is believed to still hold the lock.
        self.lock_holder: dict[str, object] | None = None
        self._stuck: tuple[bool, int] | None = None
        self._mutex = threading.RLock()
        self._fd: int | None = None
        self._fd_ident = (0, 0)  # (st_dev, st_ino) of self._fd
        self._path_checked = 0.0  # monotonic time the path last named self._fd
        self._writable = False
        self._sig: _Signature | None = None
        self._trusted = False
        # (key, value) raw bytes cut at the NUL; tuples, not PoolRecords: a reload of
        # thousands of records is on the request path.
        self._records: list[tuple[bytes, bytes]] = []
        self._index: dict[bytes, int] = {}
        self._items: list[tuple[str, str]] | None = None
        self._bad_logged: dict[bytes, float] = {}
        self.reloads = 0

    # -- descriptor --------------------------------------------------------

    def _open(self) -> int:
        directory = os.path.dirname(self.path) or "."
        if not os.path.isdir(directory):
            try:
                os.makedirs(directory, mode=0o755, exist_ok=True)
                os.chmod(directory, 0o755)
            except OSError as exc:
                raise LocalUsageError(
                    f"cannot create pool directory {directory}: {exc.strerror}"
                ) from exc
        flags = os.O_RDWR | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                fd = os.open(self.path, flags)
            except PermissionError:
                fd = -1
        except PermissionError:
            fd = -1
        else:
            # 0644 independent of the umask, like hv_kvp_daemon's files. The file is
            # ours and open: a refusal here (an LSM) must not lose the descriptor.
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o644)
        if fd >= 0:
            self._writable = True
            return fd
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise LocalUsageError(f"cannot open KVP pool file {self.path}: {exc.strerror}") from exc
        self._writable = False
        return fd

    def _current_fd(self) -> int:
        """Our descriptor, reopened if the path now names another inode."""
        if self._fd is not None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._fd_ident:
                    self._path_checked = time.monotonic()
                    return self._fd
            except FileNotFoundError:
                pass
            self._close_fd()
        fd = self._open()
        st = os.fstat(fd)
        self._fd, self._fd_ident = fd, (st.st_dev, st.st_ino)
        return fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._sig = None
        self._trusted = False

    def close(self) -> None:
        with self._mutex:
            self._close_fd()

    @property
    def writable(self) -> bool:
        with self._mutex:
            self._current_fd()
            return self._writable

    # -- locking -----------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[int]:
        """Hold flock and the fcntl whole-file lock (exclusive when writable)."""
        with self._mutex:
            deadline = time.monotonic() + self.lock_timeout
            for _attempt in range(3):
                fd = self._current_fd()
                exclusive = self._writable
                self._acquire(fd, exclusive, deadline, posix=False)
                try:
                    self._acquire(fd, exclusive, deadline, posix=True)
                except BaseException:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    raise
                # Replaced while we waited for the locks? Then they guard a file nobody
                # reads any more: start over on the new one.
                if os.fstat(fd).st_nlink > 0 or _attempt == 2:
                    break
                self._unlock(fd)
            self.lock_holder = None
            self._stuck = None
            try:
                yield fd
            finally:
                self._unlock(fd)

    @staticmethod
    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.lockf(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _acquire(self, fd: int, exclusive: bool, deadline: float, *, posix: bool) -> None:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        delay = 0.0002
        first = True
        while True:
            try:
                if posix:
                    fcntl.lockf(fd, mode)
                else:
                    fcntl.flock(fd, mode)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EINTR):
                    raise LocalUsageError(
                        f"cannot lock KVP pool file {self.path}: {exc.strerror}"
                    ) from exc
            kind = (
                "fcntl record lock, as hv_kvp_daemon takes"
                if posix
                else "flock, as cloud-init and azure-init take"
            )
            if first and self._stuck is not None and self._stuck[0] == posix:
                # The process that made the last wait give up: fail now if it still
                # holds the lock, instead of making every host request wait again.
                still = self._holder(fd, posix, only=self._stuck[1])
                if still is not None:
                    raise PoolBusyError(
                        f"KVP pool file {self.path} is still locked by {still.describe()}"
                        f" ({kind}); not waiting again (pool {self.pool})"
                    )
                self._stuck = None
            first = False
            if time.monotonic() >= deadline:
                holder = self._holder(fd, posix)
                who = "another writer"
                if holder is not None:
                    who = holder.describe()
                    self._stuck = (posix, holder.pid)
                    self.lock_holder = {
                        **holder.as_dict(),
                        "lock": "fcntl" if posix else "flock",
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    }
                raise PoolBusyError(
                    f"KVP pool file {self.path} is locked by {who} ({kind});"
                    f" gave up after {self.lock_timeout:g} s (pool {self.pool})"
                )
            delay = _sleep_backoff(delay)

    def _holder(self, fd: int, posix: bool, only: int | None = None) -> LockHolder | None:
        """The process (not us) holding the lock family on this file, from /proc/locks."""
        st = os.fstat(fd)
        for holder in find_holders(
            self.proc, st.st_dev, st.st_ino, kind="posix" if posix else "flock"
        ):
            if holder.pid != os.getpid() and (only is None or holder.pid == only):
                return holder
        return None

    # -- cache ---------------------------------------------------------------

    def _fresh(self) -> bool:
        """True when the cache still describes the file (lock-free check)."""
        if self._sig is None or not self._trusted or self._fd is None:
            return False
        # fstat() is far cheaper than a path lookup (overlayfs, long paths): a file
        # replaced by rename or deleted shows st_nlink 0. A rename that keeps the old
        # inode linked elsewhere is caught by the path check, at least once a second.
        st = os.fstat(self._fd)
        if st.st_nlink == 0 or _Signature.of(st) != self._sig:
            return False
        if time.monotonic() - self._path_checked > PATH_CHECK_PERIOD:
            try:
                path_st = os.stat(self.path)
            except OSError:
                return False
            if (path_st.st_dev, path_st.st_ino) != self._fd_ident:
                return False
            self._path_checked = time.monotonic()
        return True

    def _refresh(self, fd: int) -> None:
        """Under the lock: re-read the file unless the cache is current."""
        st = os.fstat(fd)
        sig = _Signature.of(st)
        if sig == self._sig and self._trusted:
            return
        records, rest = _read_records(fd)
        count = len(records)
        if rest and self._writable:
            log.warning(
                "%s: cutting a partial trailing record of %d bytes (torn write)",
                self.path,
                rest,
                extra={"HVGUEST_POOL": self.pool},
            )
            os.ftruncate(fd, count * POOL_RECORD_SIZE)
            st = os.fstat(fd)
            sig = _Signature.of(st)
        self._set_records(records)
        self._sig = sig
        self._trusted = time.time_ns() - st.st_mtime_ns > RACY_NS
        self.reloads += 1

    def _set_records(self, records: list[tuple[bytes, bytes]]) -> None:
        self._records = records
        index: dict[bytes, int] = {}
        for i, (key, _value) in enumerate(records):
            if key not in index:
                index[key] = i
        self._index = index
        self._items = None

    def _stamp(self, fd: int) -> None:
        """After our own write: set an mtime no later write can reproduce."""
        st = os.fstat(fd)
        mtime = st.st_mtime_ns - 1 - random.randrange(1 << 20)
        try:
            os.utime(fd, ns=(st.st_atime_ns, mtime))
        except OSError:
            self._sig = _Signature.of(st)
            self._trusted = time.time_ns() - st.st_mtime_ns > RACY_NS
            return
        self._sig = _Signature(st.st_ino, st.st_size, mtime)
        self._trusted = True

    def _snapshot(self) -> None:
        """Make the cache current: lock-free when unchanged, else under the locks."""
        if self._fresh():
            return
        with self.locked() as fd:
            self._refresh(fd)

    # -- reading -------------------------------------------------------------

    def records(self) -> list[PoolRecord]:
        """Every whole record, raw (key/value bytes cut at the first NUL)."""
        with self._mutex:
            self._snapshot()
            return [PoolRecord(k, v) for k, v in self._records]

    def record_count(self) -> int:
        with self._mutex:
            self._snapshot()
            return len(self._records)

    def get(self, key: str) -> str | None:
        """The value of the first record with ``key``; None if there is none.

        PoolRecordError if that record's value is not valid UTF-8.
        """
        raw = key.encode("utf-8", "surrogatepass")
        with self._mutex:
            self._snapshot()
            i = self._index.get(raw)
            if i is None:
                return None
            value = self._records[i][1]
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PoolRecordError(
                f"KVP value of {key!r} in {self.path}: {exc} (pool {self.pool})"
            ) from exc

    def items(self) -> list[tuple[str, str]]:
        """(key, value) of every decodable record, in file order.

        Records with invalid UTF-8, an unterminated field or an empty key are skipped
        (logged once per period): one bad record must not hide all the others.
        """
        with self._mutex:
            self._snapshot()
            if self._items is None:
                self._items = self._decode_items()
            return list(self._items)

    def item(self, index: int) -> tuple[str, str] | None:
        """The ``index``-th item of ``items()``; None past the end."""
        with self._mutex:
            self._snapshot()
            if self._items is None:
                self._items = self._decode_items()
            if 0 <= index < len(self._items):
                return self._items[index]
            return None

    def _decode_items(self) -> list[tuple[str, str]]:
        items = []
        now = time.monotonic()
        for position, (key, value) in enumerate(self._records):
            reason = None
            if not key:
                reason = "an empty key"
            elif len(key) >= POOL_KEY_SIZE or len(value) >= POOL_VALUE_SIZE:
                reason = "a field without NUL terminator"
            else:
                try:
                    items.append((key.decode("utf-8"), value.decode("utf-8")))
                    continue
                except UnicodeDecodeError:
                    reason = "invalid UTF-8"
            last = self._bad_logged.get(key)
            if last is None or now - last > _BAD_RECORD_LOG_PERIOD:
                self._bad_logged[key] = now
                log.warning(
                    "%s: skipping record %d (key %r): %s",
                    self.path,
                    position,
                    key[:64],
                    reason,
                    extra={"HVGUEST_POOL": self.pool},
                )
        return items

    # -- writing -------------------------------------------------------------

    def _writable_fd(self, fd: int) -> None:
        if not self._writable:
            raise LocalUsageError(
                f"KVP pool file {self.path} is not writable by this user (pool {self.pool})"
            )

    def set(self, key: str, value: str, *, unsafe: bool = False) -> None:
        """Insert or update ``key`` (first match is updated in place)."""
        raw_key, raw_value = check_item(key, value, pool=self.pool, unsafe=unsafe)
        record = (raw_key, raw_value)
        data = PoolRecord(raw_key, raw_value).encode()
        with self._mutex, self.locked() as fd:
            self._writable_fd(fd)
            self._refresh(fd)
            i = self._index.get(raw_key)
            if i is not None:
                if self._records[i] == record:
                    return
                _pwrite_all(fd, data, i * POOL_RECORD_SIZE)
                self._records[i] = record
            else:
                if len(self._records) >= self.max_records:
                    # Stable text (no key, no count): the daemon logs it once per period.
                    raise PoolFullError(
                        f"KVP pool {self.pool} is full: {self.max_records} records"
                        f" (kvp.max_records); new keys are refused until some are deleted"
                        f" ({self.path})"
                    )
                _pwrite_all(fd, data, len(self._records) * POOL_RECORD_SIZE)
                self._index[raw_key] = len(self._records)
                self._records.append(record)
            self._items = None
            self._stamp(fd)

    def delete(self, key: str) -> bool:
        """Remove the first record with ``key``; False if there is none."""
        raw_key = key.encode("utf-8", "surrogatepass")
        with self._mutex, self.locked() as fd:
            self._writable_fd(fd)
            self._refresh(fd)
            i = self._index.get(raw_key)
            if i is None:
                return False
            count = len(self._records)
            # Move each later record up by one, in order, as raw bytes: other
            # writers' records keep whatever they hold after their NULs.
            for j in range(i + 1, count):
                chunk = os.pread(fd, POOL_RECORD_SIZE, j * POOL_RECORD_SIZE)
                if len(chunk) != POOL_RECORD_SIZE:
                    raise LocalUsageError(f"KVP pool file {self.path} shrank during a delete")
                _pwrite_all(fd, chunk, (j - 1) * POOL_RECORD_SIZE)
            os.ftruncate(fd, (count - 1) * POOL_RECORD_SIZE)
            del self._records[i]
            self._set_records(self._records)
            self._stamp(fd)
            return True

    def missing(self, wanted: dict[str, str]) -> dict[str, str]:
        """The items of ``wanted`` that are absent or hold another value."""
        with self._mutex:
            self._snapshot()
            out = {}
            for key, value in wanted.items():
                i = self._index.get(key.encode("utf-8"))
                if i is None or self._records[i][1] != value.encode("utf-8"):
                    out[key] = value
            return out


# 48 records (122,880 bytes) per read: below glibc's mmap threshold, so reloading a
# large pool reuses the same heap memory instead of leaving megabytes resident.
_READ_RECORDS = 48


def _read_records(fd: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """Every whole record (fields cut at their first NUL, whole if they have none),
    and the size of a trailing partial record."""
    records = []
    offset = 0
    chunk_size = _READ_RECORDS * POOL_RECORD_SIZE
    while True:
        data = os.pread(fd, chunk_size, offset)
        whole = len(data) - len(data) % POOL_RECORD_SIZE
        find = data.find
        for base in range(0, whole, POOL_RECORD_SIZE):
            mid = base + POOL_KEY_SIZE
            end = base + POOL_RECORD_SIZE
            kend = find(b"\0", base, mid)
            vend = find(b"\0", mid, end)
            records.append(
                (data[base : kend if kend >= 0 else mid], data[mid : vend if vend >= 0 else end])
            )
        offset += len(data)
        if len(data) < chunk_size:
            return records, len(data) - whole


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    try:
        written = os.pwrite(fd, data, offset)
    except OSError as exc:
        raise LocalUsageError(
            f"cannot write KVP pool record at offset {offset}: {exc.strerror}"
        ) from exc
    if written != len(data):  # pragma: no cover - regular files write fully unless killed
        raise LocalUsageError(
            f"short write of KVP pool record at offset {offset}: {written} of {len(data)}"
        )


# -- process-wide registry ----------------------------------------------------

_REGISTRY: dict[str, PoolFile] = {}
_REGISTRY_LOCK = threading.Lock()
_GENERATION = [0]  # bumped by close_all()


def open_pool(
    paths: Paths,
    pool: int,
    *,
    lock_timeout: float | None = None,
    max_records: int | None = None,
) -> PoolFile:
    """The process's PoolFile for pool ``pool`` (0-4) under ``paths.pool_dir``;
    ``lock_timeout``/``max_records`` given here apply to it from now on."""
    if not isinstance(pool, int) or not 0 <= pool < POOL_COUNT:
        raise LocalUsageError(f"KVP pool is {pool!r}, must be 0..{POOL_COUNT - 1}")
    path = os.path.abspath(paths.pool_file(pool))
    with _REGISTRY_LOCK:
        pf = _REGISTRY.get(path)
        if pf is None:
            pf = _REGISTRY[path] = PoolFile(path, pool, proc=paths.proc)
        if lock_timeout is not None:
            pf.lock_timeout = lock_timeout
        if max_records is not None:
            pf.max_records = max_records
        return pf


def close_all() -> None:
    """Close every descriptor opened through ``open_pool`` (tests, daemon exit)."""
    with _REGISTRY_LOCK:
        for pf in _REGISTRY.values():
            pf.close()
        _REGISTRY.clear()
        _GENERATION[0] += 1


class PoolStore:
    """The five pools of one pool directory."""

    def __init__(
        self,
        paths: Paths,
        *,
        lock_timeout: float = LOCK_TIMEOUT,
        max_records: int = DEFAULT_MAX_RECORDS,
    ) -> None:
        self.paths = paths
        self.lock_timeout = lock_timeout
        self.max_records = max_records
        self._pools: dict[int, PoolFile] = {}
        self._generation = _GENERATION[0]

    def pool(self, pool: int) -> PoolFile:
        # Cached: this is on every host request. close_all() invalidates the cache so
        # that a process never ends up with two PoolFiles (two fds) for one file.
        if self._generation != _GENERATION[0]:
            self._pools = {}
            self._generation = _GENERATION[0]
        pf = self._pools.get(pool)
        if pf is None:
            pf = self._pools[pool] = open_pool(
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
