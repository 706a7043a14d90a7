"""Pre-shutdown hooks: <etc>/shutdown.d/*, run before the system goes down.

The kernel answers the host's shutdown request itself and starts an orderly
power-off; a unit ordered before shutdown.target runs
``hvguestctl shutdown-hooks run``, which runs the hooks here: in name order,
each within its time budget and all within a total budget, only when owned by
root and not writable by group or others. A failing hook is reported and the
next one still runs: the shutdown must not be held up.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from hvguest import hookrun
from hvguest.command import Runner, run_command
from hvguest.files import atomic_write
from hvguest.paths import Paths

log = logging.getLogger(__name__)

HOOK_DIR = "shutdown.d"
RESULT_FILE = "shutdown-hooks.json"
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


def detect_action(runner: Runner = run_command) -> str:
    """What the system is going down for, from systemd's job queue ("poweroff" when
    it cannot tell: a host-initiated shutdown is a power-off)."""
    jobs = runner(["systemctl", "list-jobs", "--no-legend", "--no-pager"], 5.0)
    if jobs.ok:
        for target, action in _TARGET_ACTIONS:
            if target in jobs.output:
                return action
    return "poweroff"


def hook_dir(paths: Paths) -> str:
    return os.path.join(paths.etc, HOOK_DIR)


def list_hooks(paths: Paths, *, owner_uid: int = 0) -> list[Hook]:
    """Every candidate in name order, with why an unusable one is skipped (the
    rules are hvguest.hookrun's, the same as for the VSS hooks)."""
    found = hookrun.discover([hook_dir(paths)], owner_uid=owner_uid)
    hooks = [Hook(h.path, True) for h in found.hooks]
    hooks += [Hook(r.path, False, r.reason) for r in found.refused]
    return sorted(hooks, key=lambda h: h.name)


def _tail(text: str) -> str:
    return text[-_TAIL:]


def run_hooks(
    paths: Paths,
    *,
    action: str = "poweroff",
    hook_timeout: float = 30.0,
    total_timeout: float = 90.0,
    owner_uid: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> list[HookResult]:
    """Run the usable hooks; the result list follows name order. All of it,
    kills and last reads included, ends within ``total_timeout``."""
    results: list[HookResult] = []
    deadline = clock() + total_timeout
    for hook in list_hooks(paths, owner_uid=owner_uid):
        if not hook.usable:
            log.warning("shutdown hook %s skipped: %s", hook.path, hook.problem)
            results.append(HookResult(hook.name, "skipped", None, 0.0, hook.problem))
            continue
        budget = hookrun.budget(hook_timeout, deadline - clock())
        if budget <= 0:
            log.warning("shutdown hook %s not run: total budget of %g s used up", hook.path,
                        total_timeout)
            results.append(HookResult(hook.name, "skipped", None, 0.0,
                                      f"total budget of {total_timeout:g} s used up"))
            continue
        start = clock()
        out = hookrun.run(
            hookrun.Hook(hook.name, hook.path), [action], timeout=budget, owner_uid=owner_uid,
            env={"HVGUEST_SHUTDOWN_ACTION": action},
        )
        took = round(clock() - start, 3)
        if out.ok:
            result, detail = "ok", _tail(out.output)
            log.info("shutdown hook %s ok (%.1f s)", hook.path, took)
        else:
            result = "timeout" if out.timed_out else "failed"
            detail = _tail(out.output) or out.error
            if out.timed_out and not out.output:
                detail = f"still running after {budget:g} s, killed"
            log.error("shutdown hook %s %s%s: %s", hook.path, result,
                      f" (exit {out.returncode})" if out.returncode is not None else "", detail)
        results.append(HookResult(hook.name, result, out.returncode, took, detail))
    return results


def save_results(paths: Paths, action: str, results: list[HookResult], now: str) -> None:
    """<run>/shutdown-hooks.json, for ``hvguestctl status shutdown``."""
    doc = {"time": now, "action": action, "results": [asdict(r) for r in results]}
    # /run is a tmpfs: nothing to gain from an fsync.
    atomic_write(os.path.join(paths.run, RESULT_FILE), json.dumps(doc, indent=2), fsync=False)


def load_results(paths: Paths) -> dict[str, object] | None:
    try:
        with open(os.path.join(paths.run, RESULT_FILE), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
