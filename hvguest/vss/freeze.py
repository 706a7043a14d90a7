"""FIFREEZE/FITHAW over a freeze plan, with rollback and per-mount results.

The engine never thaws a filesystem it did not freeze: ``EBUSY`` from FIFREEZE
means another tool holds a freeze (we deduplicate our own bind mounts and
subvolumes beforehand), so that filesystem is reported and either fails the
request or is skipped, and it is left alone at thaw.

Nothing here logs while filesystems are frozen: results are collected and the
caller logs them after the thaw (or after a failed freeze rolled back).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from hvguest.vss.mounts import Filesystem, FreezePlan

FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)


class FsOps(Protocol):
    """The system calls the engine needs; tests pass a fake."""

    def open_dir(self, path: str) -> int: ...
    def freeze(self, fd: int) -> None: ...
    def thaw(self, fd: int) -> None: ...
    def close(self, fd: int) -> None: ...


class RealFsOps:
    def open_dir(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def freeze(self, fd: int) -> None:
        fcntl.ioctl(fd, FIFREEZE, 0)

    def thaw(self, fd: int) -> None:
        fcntl.ioctl(fd, FITHAW, 0)

    def close(self, fd: int) -> None:
        os.close(fd)


class FreezeObserver(Protocol):
    """Told of every step, before and after each ioctl (the guard process)."""

    def arm(self, fds: list[int], labels: list[str]) -> None: ...
    def freezing(self, index: int) -> None: ...
    def frozen(self, index: int) -> None: ...
    def not_frozen(self, index: int) -> None: ...
    def thawed(self, index: int) -> None: ...
    def disarm(self) -> None: ...


class NullObserver:
    def arm(self, fds: list[int], labels: list[str]) -> None:
        pass

    def freezing(self, index: int) -> None:
        pass

    def frozen(self, index: int) -> None:
        pass

    def not_frozen(self, index: int) -> None:
        pass

    def thawed(self, index: int) -> None:
        pass

    def disarm(self) -> None:
        pass


@dataclass
class MountResult:
    """What happened to one filesystem, for ``hvguestctl vss status``."""

    mount_point: str
    dev: str
    fstype: str
    state: str  # planned, frozen, thawed, skipped, failed, foreign, thaw-failed
    message: str = ""
    errno: str | None = None
    freeze_ms: float | None = None
    thaw_ms: float | None = None
    also_mounted_at: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Outcome:
    ok: bool
    reason: str
    results: list[MountResult]


def _errname(err: int | None) -> str:
    if err is None:
        return "?"
    if err == errno.EOPNOTSUPP:  # same value as ENOTSUP, which errorcode prefers
        return "EOPNOTSUPP"
    return errno.errorcode.get(err, str(err))


def describe_errno(exc: OSError) -> str:
    return f"{_errname(exc.errno)} ({os.strerror(exc.errno) if exc.errno else exc})"


class FreezeEngine:
    """Freezes a plan in order and thaws it in reverse; one freeze at a time."""

    def __init__(
        self,
        ops: FsOps | None = None,
        *,
        foreign_freeze: str = "fail",
        observer: FreezeObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ops = ops or RealFsOps()
        self.foreign_freeze = foreign_freeze
        self.observer: FreezeObserver = observer or NullObserver()
        self.clock = clock
        # (index into results, fd) of what we froze, in freeze order.
        self._frozen: list[tuple[int, int]] = []
        self._fds: list[int | None] = []
        self.results: list[MountResult] = []

    @property
    def is_frozen(self) -> bool:
        return bool(self._frozen)

    def frozen_mounts(self) -> list[str]:
        return [self.results[i].mount_point for i, _ in self._frozen]

    def freeze(self, plan: FreezePlan) -> Outcome:
        if self._frozen:
            raise RuntimeError("freeze() while filesystems are frozen")
        self.results = [
            MountResult(
                fs.mount_point,
                fs.dev,
                fs.fstype,
                "planned",
                also_mounted_at=list(fs.also_mounted_at),
            )
            for fs in plan.order
        ] + [MountResult(s.mount_point, "", s.fstype, "skipped", s.reason) for s in plan.skipped]
        # Open everything first: a mount we cannot open fails the request before
        # anything is frozen, and the guard gets every fd up front.
        self._fds = []
        for i, fs in enumerate(plan.order):
            try:
                self._fds.append(self.ops.open_dir(fs.mount_point))
            except OSError as exc:
                self._fds.append(None)
                self._close_all()
                res = self.results[i]
                res.state, res.errno = "failed", _errname(exc.errno)
                res.message = f"cannot open: {describe_errno(exc)}"
                return Outcome(
                    False, f"cannot open {fs.mount_point}: {describe_errno(exc)}", self.results
                )
        fds = [fd for fd in self._fds if fd is not None]
        self.observer.arm(fds, [fs.mount_point for fs in plan.order])
        for i, fs in enumerate(plan.order):
            failure = self._freeze_one(i, fs)
            if failure is not None:
                thawed = len(self._frozen)
                rollback = self.thaw()
                reason = failure
                if thawed:
                    reason += f"; thawed the {thawed} filesystem(s) already frozen"
                if not rollback.ok:
                    reason += f"; {rollback.reason}"
                # thaw() marked frozen ones "thawed"; keep the failure visible.
                return Outcome(False, reason, self.results)
        return Outcome(True, f"froze {len(self._frozen)} filesystem(s)", self.results)

    def _freeze_one(self, i: int, fs: Filesystem) -> str | None:
        fd = self._fds[i]
        assert fd is not None
        res = self.results[i]
        self.observer.freezing(i)
        start = self.clock()
        try:
            self.ops.freeze(fd)
        except OSError as exc:
            self.observer.not_frozen(i)
            res.freeze_ms = (self.clock() - start) * 1000
            res.errno = _errname(exc.errno)
            if exc.errno == errno.EBUSY:
                res.state = "foreign"
                res.message = (
                    "already frozen by someone else (e.g. fsfreeze); hvguest will not thaw it"
                )
                if self.foreign_freeze == "skip":
                    return None
                return (
                    f"{fs.mount_point} ({fs.fstype}, {fs.dev}) is already frozen by someone"
                    " else: thaw it with 'fsfreeze -u' or set vss.foreign_freeze: skip"
                )
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY):
                res.state = "skipped"
                res.message = f"{fs.fstype} does not support freezing ({_errname(exc.errno)})"
                return None
            res.state = "failed"
            res.message = f"FIFREEZE failed: {describe_errno(exc)}"
            return (
                f"cannot freeze {fs.mount_point} ({fs.fstype}, {fs.dev}): FIFREEZE failed with"
                f" {describe_errno(exc)}; exclude it with vss.exclude if it cannot be frozen"
            )
        res.freeze_ms = (self.clock() - start) * 1000
        res.state = "frozen"
        self._frozen.append((i, fd))
        self.observer.frozen(i)
        return None

    def thaw(self) -> Outcome:
        """Thaw, in reverse order, exactly what this engine froze."""
        problems: list[str] = []
        for i, fd in reversed(self._frozen):
            res = self.results[i]
            start = self.clock()
            try:
                self.ops.thaw(fd)
            except OSError as exc:
                res.thaw_ms = (self.clock() - start) * 1000
                res.errno = _errname(exc.errno)
                if exc.errno == errno.EINVAL:
                    # Someone thawed it under us: the snapshot may not be consistent.
                    res.state = "thawed"
                    res.message = "was already thawed by someone else while the backup ran"
                    problems.append(f"{res.mount_point} was thawed by someone else before THAW")
                else:
                    res.state = "thaw-failed"
                    res.message = f"FITHAW failed: {describe_errno(exc)}"
                    problems.append(
                        f"cannot thaw {res.mount_point}: {describe_errno(exc)};"
                        f" try 'fsfreeze -u {res.mount_point}'"
                    )
                    continue  # keep it in the guard's list: not thawed
            else:
                res.thaw_ms = (self.clock() - start) * 1000
                res.state = "thawed"
            self.observer.thawed(i)
        self._frozen = []
        self._close_all()
        self.observer.disarm()
        if problems:
            return Outcome(False, "; ".join(problems), self.results)
        return Outcome(True, "thawed", self.results)

    def _close_all(self) -> None:
        for fd in self._fds:
            if fd is not None:
                try:
                    self.ops.close(fd)
                except OSError:
                    pass
        self._fds = []
