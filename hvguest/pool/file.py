"""A pool file's records: cached, read lock-free while unchanged, written record by record."""

from __future__ import annotations

import logging
import os
import random
import time

from hvguest.errors import LocalUsageError
from hvguest.pool.handle import PoolHandle
from hvguest.pool.intent import IntentFile, cut_write, page_split
from hvguest.pool.limits import (
    PATH_CHECK_PERIOD,
    RACY_NS,
    PoolFullError,
    PoolRecordError,
    check_item,
)
from hvguest.pool.records import pwrite_all, read_records, signature
from hvguest.wire.pool import POOL_KEY_SIZE, POOL_RECORD_SIZE, POOL_VALUE_SIZE, PoolRecord

log = logging.getLogger(__name__)

_BAD_RECORD_LOG_PERIOD = 300.0
_ZEROS = memoryview(bytes(POOL_VALUE_SIZE))


class PoolFile(PoolHandle):
    """One pool file: cached records, both locks, record-granular writes. Thread-safe.

    Open it through ``PoolRegistry.open()`` so that one process holds one descriptor
    per file (see ``PoolHandle``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # (key, value) raw bytes cut at the NUL; tuples, not PoolRecords: a reload of
        # thousands of records is on the request path.
        self._records: list[tuple[bytes, bytes]] = []
        self._index: dict[bytes, int] = {}
        self._items: list[tuple[str, str]] | None = None
        self._bad_logged: dict[bytes, float] = {}
        self._intent = IntentFile(self.path, self.pool)
        self.reloads = 0

    def close(self) -> None:
        with self._mutex:
            super().close()
            self._intent.close()

    # -- cache ---------------------------------------------------------------

    def _fresh(self) -> bool:
        """True when the cache still describes the file (lock-free check)."""
        if self._sig is None or not self._trusted or self._fd is None:
            return False
        # fstat() is far cheaper than a path lookup (overlayfs, long paths): a file
        # replaced by rename or deleted shows st_nlink 0. A rename that keeps the old
        # inode linked elsewhere is caught by the path check, at least once a second.
        st = os.fstat(self._fd)
        if st.st_nlink == 0 or signature(st) != self._sig:
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

    def _refresh(self, fd: int, st: os.stat_result) -> None:
        """Under the locks (``st``: the file's fstat taken under them): re-read the
        file unless the cache is current."""
        sig = signature(st)
        if sig == self._sig and self._trusted:
            return
        if self._writable and self._undo_cut_write(fd, st):
            st = os.fstat(fd)
            sig = signature(st)
        records, rest = read_records(fd)
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
            sig = signature(st)
        self._set_records(records)
        self._sig = sig
        self._trusted = time.time_ns() - st.st_mtime_ns > RACY_NS
        self.reloads += 1

    def _undo_cut_write(self, fd: int, st: os.stat_result) -> bool:
        """Under the locks: put back the record a killed writer left half rewritten
        (``hvguest.pool.intent``). True if the file was changed."""
        intent = self._intent.load()
        if intent is None:
            return False
        inode, offset, old, new = intent
        if inode != st.st_ino or offset + POOL_RECORD_SIZE > st.st_size:
            return False
        slot = os.pread(fd, POOL_RECORD_SIZE, offset)
        if not cut_write(slot, old, new):
            return False
        # This rewrite crosses the same page boundary: cut there, it is still whole.
        pwrite_all(fd, old, offset)
        log.warning(
            "%s: record %d was left half rewritten by a writer that was killed; restored",
            self.path,
            offset // POOL_RECORD_SIZE,
            extra={"HVGUEST_POOL": self.pool},
        )
        return True

    def _rewrite(self, fd: int, inode: int, offset: int, old: bytes | None, new: bytes) -> None:
        """Write ``new`` over the record at ``offset`` (``old``: its bytes, if known),
        saving the intent first when a kill could cut the write in two."""
        if page_split(offset) is not None:
            if old is None:
                old = os.pread(fd, POOL_RECORD_SIZE, offset)
            try:
                self._intent.save(inode, offset, old, new)
            except OSError as exc:
                raise LocalUsageError(
                    f"cannot save the intent of a KVP pool rewrite in {self._intent.path}:"
                    f" {exc.strerror or exc}"
                ) from exc
        pwrite_all(fd, new, offset)

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
        mtime = st.st_mtime_ns - 1 - random.getrandbits(20)
        try:
            os.utime(fd, ns=(st.st_atime_ns, mtime))
        except OSError:
            self._sig = signature(st)
            self._trusted = time.time_ns() - st.st_mtime_ns > RACY_NS
            return
        self._sig = (st.st_ino, st.st_size, mtime)
        self._trusted = True

    def _snapshot(self) -> None:
        """Make the cache current: lock-free when unchanged, else under the locks."""
        if self._fresh():
            return
        fd, st = self._lock()
        try:
            self._refresh(fd, st)
        finally:
            self._unlock(fd)

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
        # PoolRecord(raw_key, raw_value).encode() without its checks, which check_item
        # already made (at most 511/2047 bytes, no NUL): one allocation per host SET.
        data = b"".join((
            raw_key, _ZEROS[: POOL_KEY_SIZE - len(raw_key)],
            raw_value, _ZEROS[: POOL_VALUE_SIZE - len(raw_value)],
        ))
        # _lock/_unlock rather than locked(): this is on every host SET.
        with self._mutex:
            fd, st = self._lock()
            try:
                self._writable_fd(fd)
                self._refresh(fd, st)
                i = self._index.get(raw_key)
                if i is not None:
                    if self._records[i] == record:
                        return
                    self._rewrite(fd, st.st_ino, i * POOL_RECORD_SIZE, None, data)
                    self._records[i] = record
                else:
                    if len(self._records) >= self.max_records:
                        # Stable text (no key, no count): the daemon logs it once per period.
                        raise PoolFullError(
                            f"KVP pool {self.pool} is full: {self.max_records} records"
                            f" (kvp.max_records); new keys are refused until some are deleted"
                            f" ({self.path})"
                        )
                    pwrite_all(fd, data, len(self._records) * POOL_RECORD_SIZE)
                    self._index[raw_key] = len(self._records)
                    self._records.append(record)
                self._items = None
                self._stamp(fd)
            finally:
                self._unlock(fd)

    def delete(self, key: str) -> bool:
        """Remove the first record with ``key``; False if there is none."""
        raw_key = key.encode("utf-8", "surrogatepass")
        with self._mutex, self.locked() as fd:
            self._writable_fd(fd)
            st = os.fstat(fd)
            self._refresh(fd, st)
            i = self._index.get(raw_key)
            if i is None:
                return False
            count = len(self._records)
            # Move each later record up by one, in order, as raw bytes: other
            # writers' records keep whatever they hold after their NULs. A kill
            # midway leaves a record twice, never half of one.
            previous = None
            for j in range(i + 1, count):
                chunk = os.pread(fd, POOL_RECORD_SIZE, j * POOL_RECORD_SIZE)
                if len(chunk) != POOL_RECORD_SIZE:
                    raise LocalUsageError(f"KVP pool file {self.path} shrank during a delete")
                self._rewrite(fd, st.st_ino, (j - 1) * POOL_RECORD_SIZE, previous, chunk)
                previous = chunk
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
