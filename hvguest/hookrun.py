"""The one way hvguest finds and runs root hooks (VSS freeze/thaw, pre-shutdown).

Treated as sudo and cron treat root-run files: a hook runs only if nobody but
root could have placed or changed it. That is checked with ``lstat``, never
following a link at the last step:

* the hook is a regular file (a symlink is refused), owned by root (or the
  configured owner), executable, not writable by group or others;
* its directory and every directory on the way up to ``/`` is owned by root
  (or the owner) and not writable by group or others. A symlink on the way is
  followed only if root owns it and the directory holding it passed the same
  check, and its target path is checked the same way. One exception, for ancestors only: a
  root-owned directory with the sticky bit (``/tmp``) may be world-writable,
  because no other user can rename or remove root's entries in it.

The hook is then opened with ``O_NOFOLLOW``, the open file is compared with what
was checked, and that descriptor is what gets executed (``/proc/self/fd/N``; the
descriptor stays open across exec so that a ``#!`` interpreter can read it): a
file swapped in after the check is never the one that runs.

Every wait is bounded: each hook runs in its own session (process group); on
timeout the group is killed; output is read only for a short grace after the
hook exits or is killed, so a child that escaped into its own session and keeps
the pipe open cannot hold the caller.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GRACE = 1.0  # seconds to collect output after a hook ended or was killed
OUTPUT_LIMIT = 64 * 1024  # bytes of output kept (the tail)
_MAX_LINKS = 40

_IGNORED_SUFFIXES = ("~", ".rpmnew", ".rpmsave", ".rpmorig", ".disabled", ".swp", ".bak")


def ignored(name: str) -> bool:
    """Editor and package-manager leftovers and documentation: never hooks."""
    return (
        name.startswith(".")
        or name.endswith(_IGNORED_SUFFIXES)
        or ".dpkg-" in name
        or name in ("README", "README.md")
    )


@dataclass(frozen=True)
class Hook:
    name: str
    path: str  # in the checked (resolved) directory


@dataclass(frozen=True)
class Refused:
    path: str
    reason: str


@dataclass
class HookSet:
    hooks: list[Hook]
    refused: list[Refused] = field(default_factory=list)


class Unsafe(Exception):
    """A hook or one of its directories could have been changed by someone else."""


def _dir_problem(path: str, st: os.stat_result, owner_uid: int, *, ancestor: bool) -> str | None:
    if st.st_uid not in (0, owner_uid):
        return f"directory {path} is owned by uid {st.st_uid}, not root"
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        if ancestor and st.st_uid == 0 and mode & stat.S_ISVTX:
            return None
        return f"directory {path} is writable by group or others (mode {mode:04o})"
    return None


def safe_directory(path: str, *, owner_uid: int = 0) -> str:
    """The resolved form of directory ``path``, after checking every directory
    from ``/`` down (and down every symlink target on the way); raises Unsafe,
    or OSError when a part is missing."""
    links = [0]

    def walk(target: str, last_is_hook_dir: bool) -> str:
        parts = [p for p in target.split("/") if p not in ("", ".")]
        current = "/"
        st = os.lstat(current)
        problem = _dir_problem(current, st, owner_uid, ancestor=bool(parts) or not last_is_hook_dir)
        if problem:
            raise Unsafe(problem)
        for i, part in enumerate(parts):
            final = i == len(parts) - 1 and last_is_hook_dir
            if part == "..":
                current = os.path.dirname(current)  # already checked on the way down
                continue
            candidate = os.path.join(current, part)
            st = os.lstat(candidate)
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid not in (0, owner_uid):
                    # Its owner could re-point it (even inside a sticky /tmp).
                    raise Unsafe(f"symbolic link {candidate} is owned by uid {st.st_uid}")
                links[0] += 1
                if links[0] > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                # The link sits in a checked directory, so nobody else can
                # change it; its target is checked the same way.
                current = walk(os.path.join(current, os.readlink(candidate)), final)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), candidate)
            problem = _dir_problem(candidate, st, owner_uid, ancestor=not final)
            if problem:
                raise Unsafe(problem)
            current = candidate
        return current

    return walk(os.path.abspath(path), True)


def _file_problem(st: os.stat_result, owner_uid: int, need_exec: bool = True) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link (hooks must be regular files)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != owner_uid:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if need_exec and not st.st_mode & stat.S_IXUSR:
        return "not executable"
    return None


def file_problem(path: str, *, owner_uid: int = 0, need_exec: bool = True) -> str | None:
    """Why ``path`` may not run (its directories and itself, as ``open_checked``
    checks them), or None; a missing file raises FileNotFoundError."""
    try:
        directory = safe_directory(os.path.dirname(path), owner_uid=owner_uid)
    except Unsafe as exc:
        return str(exc)
    return _file_problem(os.lstat(os.path.join(directory, os.path.basename(path))),
                         owner_uid, need_exec)


def discover(dirs: Sequence[str], *, owner_uid: int = 0) -> HookSet:
    """Hooks from ``dirs`` by name; a name in an earlier dir masks later ones, even
    when refused (so an admin disables a packaged hook with a non-executable file
    of the same name in /etc)."""
    chosen: dict[str, Hook | None] = {}
    refused: list[Refused] = []
    for directory in dirs:
        try:
            resolved = safe_directory(directory, owner_uid=owner_uid)
            names = sorted(os.listdir(resolved))
        except FileNotFoundError:
            continue
        except Unsafe as exc:
            refused.append(Refused(directory, f"not used: {exc}"))
            continue
        except OSError as exc:
            refused.append(Refused(directory, f"cannot list: {exc.strerror or exc}"))
            continue
        for name in names:
            if name in chosen or ignored(name):
                continue
            path = os.path.join(resolved, name)
            try:
                problem = _file_problem(os.lstat(path), owner_uid)
            except OSError as exc:
                problem = f"cannot stat: {exc.strerror}"
            if problem is not None:
                refused.append(Refused(path, problem))
                chosen[name] = None
                continue
            chosen[name] = Hook(name, path)
    return HookSet([h for _, h in sorted(chosen.items()) if h is not None], refused)


def open_checked(path: str, *, owner_uid: int = 0, need_exec: bool = True) -> int:
    """A descriptor of hook ``path``, after every check (raises Unsafe/OSError).

    The directories are checked again (they may have changed since discovery);
    the file is opened without following a link and its descriptor checked, so
    what was checked is what the descriptor holds."""
    directory = safe_directory(os.path.dirname(path), owner_uid=owner_uid)
    full = os.path.join(directory, os.path.basename(path))
    problem = _file_problem(os.lstat(full), owner_uid, need_exec)
    if problem is not None:
        raise Unsafe(problem)
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unsafe("a symbolic link (hooks must be regular files)") from exc
        raise
    try:
        problem = _file_problem(os.fstat(fd), owner_uid, need_exec)
        if problem is not None:
            raise Unsafe(problem)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass
class Outcome:
    """How one hook run ended. ``error`` is empty for success."""

    returncode: int | None
    seconds: float
    output: str
    error: str = ""
    timed_out: bool = False
    started: bool = True  # False: refused or not executable, nothing ran

    @property
    def ok(self) -> bool:
        return not self.error


def hook_env(hook: Hook, extra: Mapping[str, str]) -> dict[str, str]:
    """The same small environment for every hook: nothing of the caller's leaks in
    (no NOTIFY_SOCKET, no WATCHDOG_USEC)."""
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", **extra, "HVGUEST_HOOK": hook.path}


def run(
    hook: Hook,
    args: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str],
    owner_uid: int = 0,
    grace: float = GRACE,
    interpreter: str | None = None,
) -> Outcome:
    """Check, then run ``hook`` with ``args`` from the checked descriptor; never
    raises for the hook's sake, never waits longer than ``timeout + 2 * grace``.

    ``interpreter``: run ``interpreter <descriptor> args`` instead (a convention
    that runs its scripts with ``sh script``: the script need not be executable,
    and the interpreter reads the checked descriptor, never the path)."""
    start = time.monotonic()
    try:
        fd = open_checked(hook.path, owner_uid=owner_uid, need_exec=interpreter is None)
    except Unsafe as exc:
        return Outcome(None, 0.0, "", f"refused: {exc}", started=False)
    except OSError as exc:
        return Outcome(None, 0.0, "", f"cannot open: {exc.strerror or exc}", started=False)
    try:
        try:
            if interpreter is None:
                argv, executable = [hook.path, *args], f"/proc/self/fd/{fd}"
            else:
                argv, executable = [interpreter, f"/proc/self/fd/{fd}", *args], interpreter
            proc = subprocess.Popen(
                argv,
                executable=executable,
                pass_fds=(fd,),  # inherited without O_CLOEXEC: a #! interpreter opens it
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=hook_env(hook, env),
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            return Outcome(None, time.monotonic() - start, "",
                           f"cannot execute: {exc.strerror or exc}", started=False)
    finally:
        os.close(fd)
    assert proc.stdout is not None
    pipe = proc.stdout.fileno()
    os.set_blocking(pipe, False)
    poller = select.poll()
    poller.register(pipe, select.POLLIN)
    output = bytearray()
    deadline = start + timeout
    read_until: float | None = None  # set once the hook has exited or been killed
    timed_out = False
    try:
        while True:
            now = time.monotonic()
            if read_until is None and proc.poll() is not None:
                read_until = now + grace
            if read_until is None and now >= deadline:
                timed_out = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)
                read_until = time.monotonic() + grace
            limit = deadline if read_until is None else read_until
            wait = max(0.0, min(limit - now, 0.2))
            if read_until is not None and now >= read_until:
                break
            if poller.poll(int(wait * 1000) + 1):
                try:
                    chunk = os.read(pipe, 65536)
                except BlockingIOError:
                    continue
                if not chunk:  # EOF: nobody holds the pipe any more
                    if proc.poll() is None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(max(0.0, deadline - time.monotonic()))
                        if proc.poll() is None:
                            continue  # the deadline branch kills it
                    break
                output += chunk
                del output[:-OUTPUT_LIMIT]
    finally:
        proc.stdout.close()
    seconds = time.monotonic() - start
    text = output.decode("utf-8", "replace").strip()
    if timed_out:
        return Outcome(None, seconds, text,
                       f"timed out after {timeout:g} s (process group killed)", True)
    rc = proc.returncode
    if rc is None:
        return Outcome(None, seconds, text, "did not end after SIGKILL")
    if rc < 0:
        return Outcome(rc, seconds, text, f"killed by signal {-rc}")
    if rc != 0:
        return Outcome(rc, seconds, text, f"exited with {rc}")
    return Outcome(0, seconds, text)


def budget(hook_timeout: float, remaining: float, grace: float = GRACE) -> float:
    """The time one hook may run so that it, its kill and the last reads fit in
    ``remaining`` seconds (0: no time left)."""
    return max(0.0, min(hook_timeout, remaining - 2 * grace))
