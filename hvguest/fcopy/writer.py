"""The file behind one transfer: a temporary file renamed into place on COMPLETE.

Data goes to an unnamed ``O_TMPFILE`` in the target directory when the filesystem
supports it, else to a hidden ``.hvguest-fcopy.*`` file there (removed on cancel and,
after a crash, on the next start via ``sweep_stale()``). Only COMPLETE gives the file
its final name, after ``fsync``: a cancelled or broken transfer leaves nothing at the
final name. Without OVER_WRITE the final step is ``linkat``, which fails if a file
appeared meanwhile, so an existing file is never replaced by accident.

The sha256 is computed as the data arrives while it arrives in order (the common
case: no second pass over the file); a WRITE anywhere else (a resend, a gap) stops
that, and COMPLETE reads the file back once to hash what is really in it. The daemon
loops hash a fragment after its reply (``write(..., defer_hash=True)`` keeps a copy,
``hash_deferred()`` hashes it): the host sends the next fragment only once it has
the reply, so hashing before it would add to every round trip.

Every OS error becomes the status the host expects: ENOSPC/EDQUOT/EFBIG -> HV_ERROR_DISK_FULL,
an existing target without OVER_WRITE -> HV_ERROR_ALREADY_EXISTS, anything else -> HV_E_FAIL.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import KW_ONLY, dataclass, field

from hvguest.fcopy.digest import Sha256, Sha256Source
from hvguest.fcopy.policy import PathPolicy, Target, TransferRefused, foreign_file
from hvguest.wire.status import HvStatus

log = logging.getLogger(__name__)

TEMP_PREFIX = ".hvguest-fcopy."
WRITEBACK_WINDOW = 32 << 20
_DEFER_MAX = 64 << 10  # a deferred fragment is copied; larger ones are hashed at once
_REHASH_BLOCK = 1 << 20
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# Filesystems without O_TMPFILE answer one of these.
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)


def _status_for(exc: OSError) -> HvStatus:
    return HvStatus.HV_ERROR_DISK_FULL if exc.errno in _FULL else HvStatus.HV_E_FAIL


@dataclass(frozen=True)
class Committed:
    path: str
    size: int
    sha256: str | None  # None when checksums are off


@dataclass(eq=False)
class FileWriter:
    """One transfer's file at a time; ``open`` / ``write`` / ``commit`` / ``discard``.

    Failures raise ``TransferRefused`` carrying the status; after a failed ``write`` or
    ``commit`` the temporary file is already gone.
    """

    policy: PathPolicy
    _: KW_ONLY
    file_mode: int = 0o644
    uid: int = -1
    gid: int = -1
    use_tmpfile: bool = True
    checksum: bool = True
    target: Target | None = field(default=None, init=False)
    _fd: int = field(default=-1, init=False)
    _temp_name: str | None = field(default=None, init=False)  # None: O_TMPFILE (no name)
    _overwrite: bool = field(default=False, init=False)
    # The kernel's SHA-256 when it offers one, else OpenSSL's (hvguest.fcopy.digest).
    digests: Sha256Source = field(default_factory=Sha256Source)
    _hash: Sha256 | None = field(default=None, init=False)  # None: checksums off
    _hashed: int = field(default=0, init=False)  # hash covers [0, _hashed); -1: out of order
    # A fragment written but not hashed yet (its bytes copied: the caller's buffer
    # is reused for the next message).
    _deferred: bytearray = field(default_factory=lambda: bytearray(_DEFER_MAX), init=False)
    _deferred_len: int = field(default=0, init=False)
    _size: int = field(default=0, init=False)
    _flushed: int = field(default=0, init=False)

    @property
    def active(self) -> bool:
        return self._fd >= 0

    @property
    def temp_path(self) -> str | None:
        if self.target is None or self._temp_name is None:
            return None
        return os.path.join(self.target.directory, self._temp_name)

    # -- lifecycle -------------------------------------------------------------

    def open(self, path_name: str, file_name: str, *, overwrite: bool, create_path: bool) -> Target:
        if self.active:
            self.discard("a new transfer starts")
        target = self.policy.resolve(path_name, file_name, create=create_path)
        try:
            existed = self._check_existing(target, overwrite)
            self._create(target)
        except BaseException:
            target.close()
            raise
        self.target = target
        # In a shared root a name that was free at START may be taken by another
        # user before COMPLETE: link without replacing, as without OVER_WRITE.
        self._overwrite = overwrite and (existed or not target.shared)
        self._hash = self.digests.new() if self.checksum else None
        self._deferred_len = 0
        self._hashed = 0
        self._size = 0
        self._flushed = 0
        log.debug("receiving %s (temporary %s)", target.path, self._temp_name or "O_TMPFILE")
        return target

    def write(self, offset: int, data: bytes | memoryview, *, defer_hash: bool = False) -> None:
        """Write ``data`` at ``offset`` and add it to the checksum (with
        ``defer_hash``, at the next ``hash_deferred()``, write or commit)."""
        if self._deferred_len:
            self.hash_deferred()
        fd = self._fd
        if fd < 0:
            raise TransferRefused("no file is open for writing")
        if not data:
            return
        try:
            done = os.pwrite(fd, data, offset)
            if done < len(data):  # rare: finish a short write, or learn why not
                view = memoryview(data)
                while done < len(view):
                    n = os.pwrite(fd, view[done:], offset + done)
                    if n == 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    done += n
        except OSError as exc:
            path = self.target.path if self.target else "?"
            self.discard(f"write failed: {exc.strerror}")
            raise TransferRefused(
                f"writing {len(data)} bytes at offset {offset} of {path} failed: {exc.strerror}",
                _status_for(exc),
            ) from exc
        end = offset + len(data)
        if self._hashed == offset:
            if self._hash is not None:  # else checksums are off
                if defer_hash and len(data) <= _DEFER_MAX:
                    self._deferred[: len(data)] = data
                    self._deferred_len = len(data)
                else:
                    self._hash.update(data)
            self._hashed = end
        else:
            self._hashed = -1  # hash the file at COMPLETE
        self._size = max(self._size, end)
        if end - self._flushed >= WRITEBACK_WINDOW:
            self._start_writeback(end)

    def hash_deferred(self) -> None:
        """Add the fragment ``write(..., defer_hash=True)`` kept to the checksum."""
        n = self._deferred_len
        if n:
            self._deferred_len = 0
            if self._hashed >= 0 and self._hash is not None:
                self._hash.update(memoryview(self._deferred)[:n])

    def commit(self) -> Committed:
        target = self.target
        if target is None or self._fd < 0:
            raise TransferRefused("no file is open to complete")
        try:
            os.fchmod(self._fd, self.file_mode)
            if self.uid >= 0 or self.gid >= 0:
                os.fchown(self._fd, self.uid, self.gid)
            os.fsync(self._fd)
            sha256 = self._digest()
            self._link_into_place(target)
        except TransferRefused:
            self.discard("completing failed")
            raise
        except OSError as exc:
            self.discard(f"completing failed: {exc.strerror}")
            raise TransferRefused(
                f"cannot complete {target.path}: {exc.strerror}", _status_for(exc)
            ) from exc
        with contextlib.suppress(OSError):
            os.fsync(target.dir_fd)
        done = Committed(target.path, self._size, sha256)
        self._close()
        return done

    def discard(self, reason: str) -> None:
        """Drop the temporary file; a no-op when nothing is open."""
        if self.target is not None and self._temp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temp_name, dir_fd=self.target.dir_fd)
        if self.target is not None:
            log.debug("discarded %s: %s", self.target.path, reason)
        self._close()

    @property
    def sha256(self) -> str | None:
        """The checksum of what is written so far (None when checksums are off or
        no file is open)."""
        return self._digest() if self.active else None

    def _digest(self) -> str | None:
        """The sha256 of the file's ``_size`` bytes: the in-order hash, or one pass
        over the file when the data did not arrive in order."""
        if not self.checksum:
            return None
        self.hash_deferred()
        if self._hashed >= 0 and self._hash is not None:
            return self._hash.hexdigest()
        h = self.digests.new()
        try:
            offset = 0
            while offset < self._size:
                block = os.pread(self._fd, min(_REHASH_BLOCK, self._size - offset), offset)
                if not block:  # cannot happen: the file is at least _size bytes
                    raise OSError(errno.EIO, f"file ends at {offset} of {self._size} bytes")
                h.update(block)
                offset += len(block)
            return h.hexdigest()
        finally:
            self.digests.release(h)

    # -- internals -------------------------------------------------------------

    def _start_writeback(self, end: int) -> None:
        """Start writing the last window to disk now, so that the fsync on COMPLETE
        has little left to do: the kernel gives each request 30 s, and a large file
        written to a slow disk could otherwise miss that. DONTNEED starts writeback
        without waiting for it (and keeps received data from crowding the page
        cache)."""
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(self._fd, self._flushed, end - self._flushed, os.POSIX_FADV_DONTNEED)
        self._flushed = end

    def _close(self) -> None:
        self._deferred_len = 0
        self.digests.release(self._hash)
        self._hash = None
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1
        self._temp_name = None
        if self.target is not None:
            self.target.close()
            self.target = None

    def _check_existing(self, target: Target, overwrite: bool) -> bool:
        """Whether the target name exists; refuses what may not be replaced."""
        try:
            st = os.stat(target.name, dir_fd=target.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise TransferRefused(f"cannot check {target.path}: {exc.strerror}") from exc
        if stat.S_ISDIR(st.st_mode):
            raise TransferRefused(f"{target.path} exists and is a directory")
        if target.shared and st.st_uid not in target.trusted_uids:
            raise TransferRefused(foreign_file(target.path, st.st_uid))
        if not overwrite:
            raise TransferRefused(
                f"{target.path} exists and the host did not set OVER_WRITE",
                HvStatus.HV_ERROR_ALREADY_EXISTS,
            )
        return True

    def _create(self, target: Target) -> None:
        mode = self.file_mode & 0o777
        if self.use_tmpfile:
            try:
                self._fd = os.open(
                    ".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode, dir_fd=target.dir_fd
                )
                self._temp_name = None
                return
            except OSError as exc:
                if exc.errno in _FULL:
                    raise TransferRefused(
                        f"cannot create a file in {target.directory}: {exc.strerror}",
                        HvStatus.HV_ERROR_DISK_FULL,
                    ) from exc
                if exc.errno not in _NO_TMPFILE:
                    raise TransferRefused(
                        f"cannot create a file in {target.directory}: {exc.strerror}"
                    ) from exc
                log.debug("%s: no O_TMPFILE (%s); using a hidden name", target.directory, exc)
        for _attempt in range(5):
            name = f"{TEMP_PREFIX}{os.urandom(6).hex()}"  # secrets.token_hex(6), minus imports
            try:
                self._fd = os.open(
                    name,
                    os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    mode,
                    dir_fd=target.dir_fd,
                )
            except FileExistsError:
                continue
            except OSError as exc:
                raise TransferRefused(
                    f"cannot create a file in {target.directory}: {exc.strerror}", _status_for(exc)
                ) from exc
            self._temp_name = name
            return
        raise TransferRefused(f"cannot find a free temporary name in {target.directory}")

    @staticmethod
    def _why_kept(target: Target) -> str:
        if target.shared:
            return "may belong to another user (shared directory): it is not replaced"
        return "OVER_WRITE is not set"

    def _link_into_place(self, target: Target) -> None:
        name, dir_fd = target.name, target.dir_fd
        if self._temp_name is None:
            # O_TMPFILE: give the open file a name. linkat never replaces a name, so for
            # OVER_WRITE link under a hidden name first and rename that over the target.
            proc_path = f"/proc/self/fd/{self._fd}"
            final = name
            if self._overwrite:
                final = f"{TEMP_PREFIX}{os.urandom(6).hex()}"
            try:
                os.link(proc_path, final, dst_dir_fd=dir_fd, follow_symlinks=True)
            except FileExistsError as exc:
                raise TransferRefused(
                    f"{target.path} appeared during the transfer and {self._why_kept(target)}",
                    HvStatus.HV_ERROR_ALREADY_EXISTS,
                ) from exc
            if self._overwrite:
                self._temp_name = final  # discard() removes it if the rename fails
                os.rename(final, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                self._temp_name = None
            return
        temp = self._temp_name
        if self._overwrite:
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            try:
                os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError as exc:
                raise TransferRefused(
                    f"{target.path} appeared during the transfer and {self._why_kept(target)}",
                    HvStatus.HV_ERROR_ALREADY_EXISTS,
                ) from exc
            os.unlink(temp, dir_fd=dir_fd)
        self._temp_name = None


def stale_directories(policy: PathPolicy, previous_temp: object = None) -> list[str]:
    """Where a crashed instance may have left a hidden temporary file: the allowed
    roots, and the directory of the temporary file it last published (from its
    state; O_TMPFILE leaves nothing anywhere)."""
    directories = list(policy.roots)
    if isinstance(previous_temp, str) and os.path.basename(previous_temp).startswith(TEMP_PREFIX):
        directory = os.path.dirname(previous_temp)
        if directory not in directories:
            directories.append(directory)
    return directories


def sweep_stale(policy: PathPolicy, directories: list[str]) -> list[str]:
    """Remove hidden temporary files left by a daemon that died mid-transfer.

    Runs at start (``FcopyService.sweep_stale``) over the allowed roots and the
    directory of the last published temporary file. A directory is opened through
    the policy (no links, nobody else's directory) and only regular files with our
    prefix owned by a trusted user go: in a shared root like /tmp another user can
    give a file or a link that name, and root could unlink it there.
    """
    removed = []
    for directory in directories:
        try:
            target = policy.open_directory(directory, create=False)
        except TransferRefused as exc:
            log.debug("not sweeping %s: %s", directory, exc)
            continue
        try:
            for entry in os.listdir(target.dir_fd):
                if not entry.startswith(TEMP_PREFIX):
                    continue
                with contextlib.suppress(OSError):
                    st = os.stat(entry, dir_fd=target.dir_fd, follow_symlinks=False)
                    if not stat.S_ISREG(st.st_mode) or st.st_uid not in policy.trusted_uids:
                        continue
                    os.unlink(entry, dir_fd=target.dir_fd)
                    removed.append(os.path.join(target.directory, entry))
        except OSError as exc:
            log.debug("not sweeping %s: %s", directory, exc.strerror)
        finally:
            target.close()
    for path in removed:
        log.info("removed %s, left by an interrupted transfer", path)
    return removed
