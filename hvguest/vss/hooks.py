"""Freeze/thaw hooks: executables in /etc/hvguest/vss.d and /usr/lib/hvguest/vss.d.

As with open-vm-tools' backupScripts.d: before the first FIFREEZE every hook runs
with ``freeze`` in name order; after the last FITHAW they run with ``thaw`` in
reverse order; when the freeze fails, every hook that was started with ``freeze``
gets ``freezefail`` (or ``thaw``, per configuration), in reverse order. A hook in
/etc replaces a packaged hook of the same name. Hooks never run while anything is
frozen: they could block writing to a frozen filesystem.

A hook is run only if it is a regular executable file owned by root and not
writable by group or others (a hook runs as root during every backup).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hvguest.errors import HookError

log = logging.getLogger(__name__)

STDERR_TAIL = 2000
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Hook:
    name: str
    path: str


@dataclass
class HookRun:
    hook: str
    argument: str
    returncode: int | None
    seconds: float
    error: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "hook": self.hook,
            "argument": self.argument,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass
class Refused:
    path: str
    reason: str


@dataclass
class HookSet:
    hooks: list[Hook]
    refused: list[Refused] = field(default_factory=list)


def _unsafe(path: str, st: os.stat_result, owner_uid: int) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not st.st_mode & stat.S_IXUSR:
        return "not executable"
    if st.st_uid != owner_uid:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def discover(dirs: Sequence[str], *, owner_uid: int = 0) -> HookSet:
    """Hooks from ``dirs`` (later dirs lose to earlier: pass /etc first), by name.

    Names starting with "." or ending in "~", ".dpkg-*", ".rpmnew", ".rpmsave",
    ".disabled" or ".swp" are ignored (editor and package-manager leftovers). A hook
    in an earlier dir that is refused still masks the same name in later dirs, so an
    admin can disable a packaged hook with a non-executable file of the same name.
    """
    chosen: dict[str, Hook | None] = {}
    refused: list[Refused] = []
    for directory in dirs:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as exc:
            refused.append(Refused(directory, f"cannot list: {exc.strerror}"))
            continue
        for name in names:
            if name in chosen or _ignored(name):
                continue
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError as exc:
                refused.append(Refused(path, f"cannot stat: {exc.strerror}"))
                chosen[name] = None
                continue
            reason = _unsafe(path, st, owner_uid)
            if reason is not None:
                refused.append(Refused(path, reason))
                chosen[name] = None
                continue
            chosen[name] = Hook(name, path)
    hooks = [h for _, h in sorted(chosen.items()) if h is not None]
    return HookSet(hooks, refused)


def _ignored(name: str) -> bool:
    return (
        name.startswith(".")
        or name.endswith(("~", ".rpmnew", ".rpmsave", ".rpmorig", ".disabled", ".swp"))
        or ".dpkg-" in name
        or name in ("README", "README.md")
    )


def run_hook(
    hook: Hook,
    argument: str,
    *,
    timeout: float,
    env: Mapping[str, str],
) -> HookRun:
    """Run one hook; never raises. A timeout kills its whole process group."""
    start = time.monotonic()
    full_env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", **env, "HVGUEST_VSS_OPERATION": argument}
    try:
        proc = subprocess.Popen(
            [hook.path, argument],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd="/",
            start_new_session=True,
        )
    except OSError as exc:
        return HookRun(
            hook.name, argument, None, time.monotonic() - start, f"cannot execute: {exc.strerror}"
        )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Children that kept the pipe open were killed with the group.
        try:
            output, _ = proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            output = b""
        return HookRun(
            hook.name,
            argument,
            None,
            time.monotonic() - start,
            f"timed out after {timeout:g} s (process group killed)" + _tail(output),
        )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        what = (
            f"killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with {proc.returncode}"
        )
        return HookRun(hook.name, argument, proc.returncode, seconds, what + _tail(output))
    return HookRun(hook.name, argument, 0, seconds, "")


def _tail(output: bytes | None) -> str:
    if not output:
        return ""
    text = output.decode("utf-8", "replace").strip()
    if not text:
        return ""
    return ": " + text[-STDERR_TAIL:]


def as_error(run: HookRun) -> HookError:
    output = run.error.split(": ", 1)[1] if ": " in run.error else ""
    reason = run.error.split(": ", 1)[0] if run.error else ""
    return HookError(run.hook, run.returncode, output, reason)


class HookRunner:
    """Runs the hook sequence of one freeze/thaw cycle and remembers who froze."""

    def __init__(
        self,
        hooks: Sequence[Hook],
        *,
        timeout: float,
        failure_argument: str = "freezefail",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.hooks = list(hooks)
        self.timeout = timeout
        self.failure_argument = failure_argument
        self.env = dict(env or {})
        self.started: list[Hook] = []  # got "freeze", in order
        self.runs: list[HookRun] = []

    def freeze(self) -> HookError | None:
        """Run ``freeze`` in name order; stop at the first failure."""
        self.started = []
        self.runs = []
        for hook in self.hooks:
            self.started.append(hook)
            run = run_hook(hook, "freeze", timeout=self.timeout, env=self.env)
            self.runs.append(run)
            if run.error:
                return as_error(run)
        return None

    def thaw(self) -> list[HookError]:
        return self._unwind("thaw")

    def freeze_failed(self, reason: str) -> list[HookError]:
        return self._unwind(self.failure_argument, {"HVGUEST_VSS_FAILURE": reason})

    def _unwind(self, argument: str, extra: Mapping[str, str] | None = None) -> list[HookError]:
        errors = []
        env = {**self.env, **(extra or {})}
        for hook in reversed(self.started):
            run = run_hook(hook, argument, timeout=self.timeout, env=env)
            self.runs.append(run)
            if run.error:
                errors.append(as_error(run))
        self.started = []
        return errors
