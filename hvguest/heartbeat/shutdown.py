"""Pre-shutdown hooks: <etc>/shutdown.d/*, run before the system goes down.

The kernel answers the host's shutdown request itself and starts an orderly
power-off; a unit ordered before shutdown.target runs
``hvguestctl shutdown-hooks run``, which runs the hooks here: in name order,
each within its time budget and all within a total budget, only when owned by
root and not writable by group or others. A failing hook is reported and the
next one still runs: the shutdown must not be held up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from hvguest.paths import Paths

log = logging.getLogger(__name__)

HOOK_DIR = "shutdown.d"
RESULT_FILE = "shutdown-hooks.json"
_SKIP_SUFFIXES = ("~", ".dpkg-old", ".dpkg-new", ".dpkg-dist", ".rpmnew", ".rpmsave", ".swp",
                  ".disabled")
_TAIL = 400


@dataclass(frozen=True)
class Hook:
    path: str
    usable: bool
    problem: str = ""

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass(frozen=True)
class HookResult:
    hook: str
    result: str  # ok / failed / timeout / skipped
    returncode: int | None
    seconds: float
    detail: str = ""


_TARGET_ACTIONS = (("reboot.target", "reboot"), ("kexec.target", "kexec"),
                   ("halt.target", "halt"), ("poweroff.target", "poweroff"))


def detect_action(runner: Callable[[list[str], float], tuple[int, str]]) -> str:
    """What the system is going down for, from systemd's job queue ("poweroff" when
    it cannot tell: a host-initiated shutdown is a power-off)."""
    rc, out = runner(["systemctl", "list-jobs", "--no-legend", "--no-pager"], 5.0)
    if rc == 0:
        for target, action in _TARGET_ACTIONS:
            if target in out:
                return action
    return "poweroff"


def hook_dir(paths: Paths) -> str:
    return os.path.join(paths.etc, HOOK_DIR)


def list_hooks(paths: Paths, *, owner_uid: int = 0) -> list[Hook]:
    """Every candidate in name order, with why an unusable one is skipped."""
    directory = hook_dir(paths)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    hooks = []
    for name in names:
        if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
        except OSError as exc:
            hooks.append(Hook(path, False, f"cannot stat: {exc.strerror}"))
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if st.st_uid != owner_uid:
            hooks.append(Hook(path, False, f"owned by uid {st.st_uid}, not root"))
        elif st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
            hooks.append(Hook(path, False, "writable by group or others"))
        elif not st.st_mode & stat.S_IXUSR:
            hooks.append(Hook(path, False, "not executable"))
        else:
            hooks.append(Hook(path, True))
    return hooks


def _run_one(path: str, action: str, budget: float) -> tuple[str, int | None, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["HVGUEST_SHUTDOWN_ACTION"] = action
    try:
        proc = subprocess.Popen(
            [path, action], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, start_new_session=True, close_fds=True,
        )
    except OSError as exc:
        return "failed", None, f"cannot start: {exc.strerror or exc}"
    try:
        out, _ = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        # The hook may have started children: end its whole session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return "timeout", None, _tail(out) or f"still running after {budget:g} s, killed"
    tail = _tail(out)
    if proc.returncode == 0:
        return "ok", 0, tail
    return "failed", proc.returncode, tail


def _tail(data: bytes | None) -> str:
    if not data:
        return ""
    return data.decode("utf-8", "replace").strip()[-_TAIL:]


def run_hooks(
    paths: Paths,
    *,
    action: str = "poweroff",
    hook_timeout: float = 30.0,
    total_timeout: float = 90.0,
    owner_uid: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> list[HookResult]:
    """Run the usable hooks; the result list follows name order."""
    results: list[HookResult] = []
    deadline = clock() + total_timeout
    for hook in list_hooks(paths, owner_uid=owner_uid):
        if not hook.usable:
            log.warning("shutdown hook %s skipped: %s", hook.path, hook.problem)
            results.append(HookResult(hook.name, "skipped", None, 0.0, hook.problem))
            continue
        remaining = deadline - clock()
        if remaining <= 0:
            log.warning("shutdown hook %s not run: total budget of %g s used up", hook.path,
                        total_timeout)
            results.append(HookResult(hook.name, "skipped", None, 0.0,
                                      f"total budget of {total_timeout:g} s used up"))
            continue
        budget = min(hook_timeout, remaining)
        start = clock()
        result, rc, detail = _run_one(hook.path, action, budget)
        took = round(clock() - start, 3)
        if result == "ok":
            log.info("shutdown hook %s ok (%.1f s)", hook.path, took)
        else:
            log.error("shutdown hook %s %s%s: %s", hook.path, result,
                      f" (exit {rc})" if rc is not None else "", detail)
        results.append(HookResult(hook.name, result, rc, took, detail))
    return results


def save_results(paths: Paths, action: str, results: list[HookResult], now: str) -> None:
    """<run>/shutdown-hooks.json, for ``hvguestctl status shutdown``."""
    doc = {"time": now, "action": action, "results": [asdict(r) for r in results]}
    os.makedirs(paths.run, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=paths.run)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(paths.run, RESULT_FILE))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_results(paths: Paths) -> dict[str, object] | None:
    try:
        with open(os.path.join(paths.run, RESULT_FILE), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
