"""One pool file's descriptor and its two locks (flock and the fcntl record lock).

POSIX record locks belong to the process and are dropped when *any* descriptor of the
file is closed: a process must hold one descriptor per file (``PoolRegistry``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hvguest.errors import LocalUsageError
from hvguest.pool.limits import DEFAULT_MAX_RECORDS, LOCK_TIMEOUT, PoolBusyError
from hvguest.pool.records import Signature

if TYPE_CHECKING:
    from hvguest.lockholders import LockHolder


def _sleep_backoff(delay: float) -> float:
    time.sleep(delay)
    return min(delay * 2, 0.02)


@dataclass(eq=False)  # one object per file: identity, not field equality
class PoolHandle:
    """The descriptor of one pool file (reopened when the path names another inode)
    and both locks, each with a bounded wait that names the holder on giving up."""

    path: str
    pool: int
    lock_timeout: float = field(default=LOCK_TIMEOUT, kw_only=True)
    max_records: int = field(default=DEFAULT_MAX_RECORDS, kw_only=True)
    proc: str = field(default="/proc", kw_only=True)  # where /proc/locks names holders

    def __post_init__(self) -> None:
        # The process that made the last lock wait give up (for status), and its pid
        # with the lock family while it is believed to still hold the lock.
        self.lock_holder: dict[str, object] | None = None
        self._stuck: tuple[bool, int] | None = None
        self._mutex = threading.RLock()
        self._fd: int | None = None
        self._fd_ident = (0, 0)  # (st_dev, st_ino) of self._fd
        self._path_checked = 0.0  # monotonic time the path last named self._fd
        self._writable = False
        # The cache's signature (PoolFile); forgotten with the descriptor.
        self._sig: Signature | None = None
        self._trusted = False

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
            fd, _st = self._lock()
            try:
                yield fd
            finally:
                self._unlock(fd)

    def _lock(self) -> tuple[int, os.stat_result]:
        """Take both locks on the current file: its descriptor, which the caller (holding
        ``_mutex``) must ``_unlock``, and its fstat taken under the locks."""
        deadline = time.monotonic() + self.lock_timeout
        for attempt in range(3):
            fd = self._fd if self._fd is not None else self._current_fd()
            exclusive = self._writable
            self._acquire(fd, exclusive, deadline, posix=False)
            try:
                self._acquire(fd, exclusive, deadline, posix=True)
            except BaseException:
                fcntl.flock(fd, fcntl.LOCK_UN)
                raise
            # Does the path still name our file, now that we hold its locks? If it was
            # replaced, renamed away or deleted (before or while we waited), the locks
            # guard a file nobody reads any more: start over on the path's file. One
            # stat of the path under the locks answers that and, for the same inode,
            # is the file's fstat too (one system call less on every write).
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                pass
            else:
                if (st.st_dev, st.st_ino) == self._fd_ident:
                    self._path_checked = time.monotonic()
                    break
            if attempt == 2:  # replaced three times over: settle for this file
                st = os.fstat(fd)
                break
            self._unlock(fd)
            self._close_fd()  # the next attempt opens what the path names now
        self.lock_holder = None
        self._stuck = None
        return fd, st

    @staticmethod
    def _unlock(fd: int) -> None:
        try:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass

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
        from hvguest.lockholders import find_holders  # only once a lock wait gave up

        st = os.fstat(fd)
        for holder in find_holders(
            self.proc, st.st_dev, st.st_ino, kind="posix" if posix else "flock"
        ):
            if holder.pid != os.getpid() and (only is None or holder.pid == only):
                return holder
        return None
