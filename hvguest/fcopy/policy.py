"""Where the host may put files: allowed roots, no ``..``, no symlinks, nothing
another user controls.

The host names a directory (``path_name``) and a file name. The reference daemons
join them and open the result, so ``../../etc/passwd`` lands in /etc and a symlink
planted under /tmp redirects a copy anywhere. Here the path must be absolute, free of
``..``, and inside one of the configured roots; below the root every directory is
opened with ``openat(dir_fd, name, O_NOFOLLOW|O_DIRECTORY)``, so a symlink anywhere
below the root is refused rather than followed, and a rename of a directory during
the walk cannot move us outside. Missing directories are created with ``mkdirat``
when the host set CREATE_PATH: the whole chain, including the last component.

The roots themselves are the administrator's choice and are opened normally.

Ownership: a root-owned file landing in a directory that an unprivileged user owns
or can write is theirs to swap before anyone uses it (``O_NOFOLLOW`` stops links,
not ownership). So every directory below the root must be owned by a trusted user
(root, the daemon's own user or ``fcopy.owner``) and not writable by group or
others, checked with ``fstat`` on the descriptor the walk then uses. The root itself
may also be shared like /tmp (trusted owner, sticky bit): there the file is linked
in under its name without ever replacing a file of another user, and directories
made for CREATE_PATH belong to us. Anything else is refused with HV_E_FAIL (the host
knows no status for "access denied" in file copy) and the reason.
Names with control characters or line separators are refused (hvguest.wire.fcopy_names).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from hvguest.errors import HostProtocolError
from hvguest.wire.fcopy_names import unsafe_reason
from hvguest.wire.status import HvStatus

log = logging.getLogger(__name__)

NAME_MAX = 255
PATH_MAX = 4096

DEFAULT_ROOTS = ("/var/lib/hvguest/incoming", "/tmp")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TransferRefused(HostProtocolError):
    """The host's request cannot be carried out; ``status`` is the reply to send."""

    def __init__(self, message: str, status: HvStatus = HvStatus.HV_E_FAIL) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Target:
    """An open directory inside an allowed root and the file name to create in it."""

    dir_fd: int
    directory: str
    name: str
    root: str
    created: list[str] = field(default_factory=list)
    # The directory is a shared (sticky, world-writable) root: never replace a name
    # that another user may own or create.
    shared: bool = False
    trusted_uids: frozenset[int] = frozenset({0})

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.name)

    def close(self) -> None:
        if self.dir_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.dir_fd)
            self.dir_fd = -1


@dataclass(frozen=True)
class Verdict:
    """``hvguestctl fcopy check``: would a copy to ``path`` be allowed, and why not."""

    path: str
    allowed: bool
    reason: str
    root: str | None = None
    missing: tuple[str, ...] = ()
    exists: bool = False


def _components(path: str, what: str) -> list[str]:
    parts = [c for c in path.split("/") if c not in ("", ".")]
    for part in parts:
        if part == "..":
            raise TransferRefused(f"{what} {path!r} contains a '..' component")
        if len(os.fsencode(part)) > NAME_MAX:
            raise TransferRefused(
                f"{what} {path!r}: component {part[:40]!r}... is longer than {NAME_MAX} bytes"
            )
    return parts


def check_file_name(file_name: str) -> None:
    if not file_name:
        raise TransferRefused("file name is empty")
    if (why := unsafe_reason("file name", file_name)) is not None:
        raise TransferRefused(why)
    if "/" in file_name:
        raise TransferRefused(f"file name {file_name!r} contains '/'")
    if file_name in (".", ".."):
        raise TransferRefused(f"file name {file_name!r} is not a file name")
    if len(os.fsencode(file_name)) > NAME_MAX:
        raise TransferRefused(f"file name {file_name[:40]!r}... is longer than {NAME_MAX} bytes")


class PathPolicy:
    """Allowed roots plus the modes and owner of what gets created."""

    def __init__(
        self,
        roots: Sequence[str] = DEFAULT_ROOTS,
        *,
        dir_mode: int = 0o755,
        uid: int = -1,
        gid: int = -1,
    ) -> None:
        if dir_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ValueError(
                f"directory mode {dir_mode:04o} lets group or others write: directories "
                "made for CREATE_PATH would be refused on the next copy"
            )
        normalised = []
        for root in roots:
            if not os.path.isabs(root):
                raise ValueError(f"allowed root {root!r} is not an absolute path")
            normalised.append(os.path.normpath(root))
        self.roots = tuple(normalised)
        self.dir_mode = dir_mode
        self.uid = uid
        self.gid = gid
        trusted = {0, os.geteuid()}
        if uid >= 0:
            trusted.add(uid)
        self.trusted_uids = frozenset(trusted)

    # -- lookup --------------------------------------------------------------

    def split(self, path_name: str) -> tuple[str, list[str]]:
        """The allowed root holding ``path_name`` and the components below it."""
        if (why := unsafe_reason("directory", path_name)) is not None:
            raise TransferRefused(why)
        if not path_name.startswith("/"):
            raise TransferRefused(f"directory {path_name!r} is not an absolute path")
        if len(os.fsencode(path_name)) > PATH_MAX:
            raise TransferRefused(
                f"directory {path_name[:40]!r}... is longer than {PATH_MAX} bytes"
            )
        parts = _components(path_name, "directory")
        best: tuple[str, list[str]] | None = None
        depth = -1
        for root in self.roots:
            root_parts = [c for c in root.split("/") if c]
            # The deepest matching root wins, so a narrower root's rules apply.
            if parts[: len(root_parts)] == root_parts and len(root_parts) > depth:
                best, depth = (root, parts[len(root_parts) :]), len(root_parts)
        if best is None:
            allowed = ", ".join(self.roots) or "none configured"
            raise TransferRefused(
                f"directory {path_name!r} is outside the allowed roots ({allowed})"
            )
        return best

    def open_directory(self, path_name: str, *, create: bool) -> Target:
        """Open the directory ``path_name`` (creating missing parts when ``create``),
        refusing symlinks and non-directories below the root."""
        root, rest = self.split(path_name)
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise TransferRefused(f"allowed root {root} cannot be opened: {exc.strerror}") from exc
        target = Target(fd, root, "", root, trusted_uids=self.trusted_uids)
        try:
            target.shared = self.vet(fd, root, is_root=True)
            for part in rest:
                child = os.path.join(target.directory, part)
                new_fd = self._open_child(target.dir_fd, child, part, create, target)
                os.close(target.dir_fd)
                target.dir_fd = new_fd
                target.directory = child
                target.shared = False
                self.vet(new_fd, child, is_root=False)
        except BaseException:
            target.close()
            raise
        return target

    def resolve(self, path_name: str, file_name: str, *, create: bool) -> Target:
        check_file_name(file_name)
        target = self.open_directory(path_name, create=create)
        target.name = file_name
        return target

    def vet(self, dir_fd: int, path: str, *, is_root: bool) -> bool:
        """Refuse a directory another user controls; True for a shared (sticky,
        group/world-writable) root."""
        st = os.fstat(dir_fd)
        if st.st_uid not in self.trusted_uids:
            raise TransferRefused(
                f"{path} is owned by uid {st.st_uid}: fcopy does not write into "
                "directories other users control"
            )
        if not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
        if is_root and st.st_mode & stat.S_ISVTX:
            return True
        raise TransferRefused(
            f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            "fcopy does not write into directories other users control"
            + ("" if is_root else "; only an allowed root may be shared like /tmp")
        )

    def _open_child(self, dir_fd: int, child: str, part: str, create: bool, target: Target) -> int:
        for _attempt in range(3):
            try:
                return os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                if not create:
                    raise TransferRefused(
                        f"directory {child} does not exist and the host did not set CREATE_PATH"
                    ) from None
            except OSError as exc:
                raise TransferRefused(self._why_not_dir(dir_fd, child, part, exc)) from exc
            try:
                os.mkdir(part, self.dir_mode, dir_fd=dir_fd)
            except FileExistsError:
                continue  # raced with someone else; open what is there now
            except OSError as exc:
                raise TransferRefused(
                    f"cannot create directory {child}: {exc.strerror}",
                    HvStatus.HV_ERROR_DISK_FULL
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                    else HvStatus.HV_E_FAIL,
                ) from exc
            target.created.append(child)
            log.info("created directory %s", child)
            fd = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                # mkdir is subject to the umask; set the configured mode and owner exactly.
                os.fchmod(fd, self.dir_mode)
                if self.uid >= 0 or self.gid >= 0:
                    os.fchown(fd, self.uid, self.gid)
            except BaseException:
                os.close(fd)
                raise
            return fd
        raise TransferRefused(f"directory {child} keeps changing while it is created")

    @staticmethod
    def _why_not_dir(dir_fd: int, child: str, part: str, exc: OSError) -> str:
        try:
            st = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return f"cannot open directory {child}: {exc.strerror}"
        if stat.S_ISLNK(st.st_mode):
            return f"{child} is a symbolic link; links are not followed"
        if not stat.S_ISDIR(st.st_mode):
            return f"{child} exists and is not a directory"
        return f"cannot open directory {child}: {exc.strerror}"

    # -- dry run ------------------------------------------------------------

    def check(self, path: str, *, create: bool = True, overwrite: bool = True) -> Verdict:
        """Would a copy to the file ``path`` be allowed? Nothing is created."""
        directory, _, name = path.rstrip("/").rpartition("/")
        directory = directory or "/"
        try:
            check_file_name(name)
            root, rest = self.split(directory)
        except TransferRefused as exc:
            return Verdict(path, False, str(exc))
        missing: list[str] = []
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return Verdict(
                path, False, f"allowed root {root} cannot be opened: {exc.strerror}", root
            )
        current = root
        try:
            try:
                shared = self.vet(fd, root, is_root=True)
            except TransferRefused as exc:
                return Verdict(path, False, str(exc), root)
            for i, part in enumerate(rest):
                current = os.path.join(current, part)
                try:
                    new_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    missing = [os.path.join(root, *rest[: j + 1]) for j in range(i, len(rest))]
                    break
                except OSError as exc:
                    return Verdict(path, False, self._why_not_dir(fd, current, part, exc), root)
                os.close(fd)
                fd = new_fd
                shared = False
                try:
                    self.vet(fd, current, is_root=False)
                except TransferRefused as exc:
                    return Verdict(path, False, str(exc), root)
            else:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return Verdict(path, True, f"inside {root}", root)
                if stat.S_ISDIR(st.st_mode):
                    return Verdict(path, False, f"{path} is a directory", root, exists=True)
                if shared and st.st_uid not in self.trusted_uids:
                    return Verdict(path, False, foreign_file(path, st.st_uid), root, exists=True)
                if not overwrite:
                    return Verdict(
                        path, False, f"{path} exists and OVER_WRITE is not set", root, exists=True
                    )
                return Verdict(
                    path,
                    True,
                    f"inside {root}; replaces the existing file",
                    root,
                    exists=True,
                )
        finally:
            os.close(fd)
        if not create:
            return Verdict(
                path,
                False,
                f"directory {missing[0]} does not exist and CREATE_PATH is not set",
                root,
                tuple(missing),
            )
        return Verdict(
            path,
            True,
            f"inside {root}; CREATE_PATH would create {', '.join(missing)}",
            root,
            tuple(missing),
        )


def foreign_file(path: str, uid: int) -> str:
    return (
        f"{path} belongs to uid {uid} in a shared directory: fcopy never replaces "
        "another user's file"
    )
