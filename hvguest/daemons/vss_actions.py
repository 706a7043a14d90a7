"""What hvguest-vssd does when the VSS role asks: check, freeze, thaw.

The freeze is the one place where the order of things keeps a machine from being
left frozen or hung, so it is spelled out here once:

1. plan the freeze (mountinfo, sysfs), make sure the thaw guard runs;
2. run the freeze hooks (the guard learns at every step which hooks are owed a
   ``freezefail``, so they get it even if this process dies);
3. write the emergency-thaw record and publish "frozen": the last disk writes;
4. hold logging and the state file in memory, then FIFREEZE (the engine tells the
   guard before and after each ioctl); from now on the hooks are owed ``thaw``;
5. at thaw: FITHAW, answer the host (nothing written yet: THAW has a deadline),
   then release logging and state, remove the record and run the thaw hooks.

Hooks and FIFREEZE block the loop thread; the watchdog is fed meanwhile, each wait
bounded. A failed or crashed freeze thaws, releases what was held and gives the
hooks that got ``freeze`` their ``freezefail``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from hvguest import log as hvlog
from hvguest.daemon import Runtime
from hvguest.errors import HvGuestError
from hvguest.paths import Paths
from hvguest.roles.vss import CapabilityChecked, FreezeDone, ThawDone, ThawWhy
from hvguest.state import StatePublisher, utc_now
from hvguest.vss.foreign import Call, ForeignHook, discover_foreign
from hvguest.vss.foreign_run import ForeignRunner
from hvguest.vss.freeze import FreezeEngine, MountResult
from hvguest.vss.guard_client import GuardClient
from hvguest.vss.hooks import Hook, HookRunner, discover, hook_dirs
from hvguest.vss.mounts import FreezePlan, owner_of, plan_at, read_mountinfo
from hvguest.vss.record import clear_record, write_record
from hvguest.vss.settings import VssSettings

log = logging.getLogger("hvguest.daemons.vssd")


def make_plan(paths: Paths, settings: VssSettings) -> FreezePlan:
    return plan_at(paths.proc, paths.sys, exclude=settings.exclude, include=settings.include)


@dataclass
class FreezeWork:
    """Carries out CheckCapability, Freeze and Thaw; keeps the last freeze's summary."""

    paths: Paths
    settings: VssSettings
    runtime: Runtime
    engine: FreezeEngine
    guard: GuardClient | None
    state: StatePublisher
    clock: Callable[[], float] = time.monotonic
    hooks: HookRunner | None = field(default=None, init=False)
    foreign: ForeignRunner | None = field(default=None, init=False)
    # Counters since the daemon started, for `hvguestctl status --prometheus`.
    stats: dict[str, Any] = field(default_factory=lambda: {
        "ok": 0, "failed": 0, "last_ok": None, "last_failed": None,
        "hooks_run": 0, "hooks_failed": 0,
    }, init=False)
    last_freeze: dict[str, Any] | None = field(default=None, init=False)
    _thawed: list[str] = field(default_factory=list, init=False)  # for the thaw's log line

    # -- HOT_BACKUP ----------------------------------------------------------------

    def check(self) -> CapabilityChecked:
        try:
            plan = make_plan(self.paths, self.settings)
        except HvGuestError as exc:
            return CapabilityChecked(False, f"live backup not possible: {exc}")
        n = len(plan.order)
        detail = f"{n} filesystem(s) to freeze" if n else "nothing to freeze (crash-consistent)"
        return CapabilityChecked(True, detail)

    # -- FREEZE ----------------------------------------------------------------------

    def freeze(self) -> FreezeDone:
        try:
            return self._freeze()
        except Exception as exc:
            # A bug must not leave anything frozen, nor logging held.
            if self.engine.is_frozen:
                self.engine.thaw()
            self.release_io()
            clear_record(self.paths)
            log.exception("FREEZE failed unexpectedly; everything thawed")
            reason = f"internal error: {exc!r}"
            self._unwind_hooks(reason)  # a hook that got freeze gets its freezefail
            return self._failed(utc_now(), reason, [])

    def _freeze(self) -> FreezeDone:
        started = utc_now()
        t0 = self.clock()
        try:
            plan = make_plan(self.paths, self.settings)
        except HvGuestError as exc:
            return self._failed(started, f"cannot plan the freeze: {exc}", [])
        problem = self.guard.ensure_running() if self.guard is not None else None
        if problem is not None:
            return self._failed(started, problem, [])
        self.hooks = self._hook_runner(plan)
        self.foreign = self._foreign_runner()
        with self._busy_with_hooks():
            self._phase()
            # Ours first, then the other agents' scripts (they thaw first).
            hook_error = self.hooks.freeze()
            if hook_error is None:
                hook_error = self.foreign.freeze()
        if hook_error is not None:
            reason = f"freeze hook failed: {hook_error}"
            self._unwind_hooks(reason)
            return self._failed(started, reason, [])
        # Last chance to write anything: from here until the thaw, no disk I/O.
        try:
            write_record(self.paths, {
                "pid": os.getpid(),
                "started": started,
                "mounts": [{"mount_point": fs.mount_point, "dev": fs.dev} for fs in plan.order],
            })
        except OSError as exc:
            log.warning("cannot write the freeze record under %s: %s", self.paths.run, exc)
        self.state.update(
            state="frozen",
            details={"frozen": True, "frozen_since": started, "frozen_mounts": plan.mount_points()},
        )
        self.state.publish()
        hvlog.hold()
        self.state.hold()
        # FIFREEZE syncs first, which may take long; the guard thaws after
        # auto_thaw anyway, so that bounds the pings too.
        with self.runtime.keepalive(self.settings.auto_thaw):
            outcome = self.engine.freeze(plan)
        elapsed = (self.clock() - t0) * 1000
        if not outcome.ok:
            self.release_io()
            clear_record(self.paths)
            self._unwind_hooks(outcome.reason)
            return self._failed(started, outcome.reason, outcome.results, elapsed)
        self.hooks.frozen()
        self.foreign.frozen()
        self.last_freeze = _summary(started, True, outcome.reason, outcome.results, elapsed)
        self.stats["ok"] += 1
        self.stats["last_ok"] = time.time()
        self._refine_record(started, plan, outcome.results)
        return FreezeDone(True, outcome.reason)

    def _hook_runner(self, plan: FreezePlan) -> HookRunner:
        found = discover(hook_dirs(self.paths.etc, self.paths.lib)) if self.settings.hooks else None
        for refused in found.refused if found is not None else []:
            log.warning("hook %s refused: %s", refused.path, refused.reason)
        env = {
            "HVGUEST_VSS_MOUNTS": "\n".join(plan.mount_points()),
            "HVGUEST_VSS_HOOK_TIMEOUT": f"{self.settings.hook_timeout:g}",
            "HVGUEST_VSS_AUTO_THAW": f"{self.settings.auto_thaw:g}",
            "HVGUEST_ETC_DIR": self.paths.etc,
        }
        return HookRunner(
            found.hooks if found is not None else [],
            timeout=self.settings.hook_timeout,
            total_timeout=self.settings.hook_phase_timeout,
            failure_argument=self.settings.failure_hook_argument,
            env=env,
            observer=self._hooks_owed,
        )

    def _foreign_runner(self) -> ForeignRunner:
        found = discover_foreign(self.paths, self.settings.foreign_hooks)
        for convention, why in found.skipped:
            log.info("%s freeze scripts not run: %s", convention, why)
        for note in found.notes:
            log.warning("%s", note)
        assert self.hooks is not None
        return ForeignRunner(
            found,
            timeout=self.settings.hook_timeout,
            total_timeout=self.settings.hook_phase_timeout,
            env=self.hooks.env,
            observer=self._foreign_owed,
            clock=self.hooks.clock,
        )

    def _phase(self) -> None:
        """One budget for a phase of hooks, ours and the foreign ones together."""
        if self.hooks is None:
            return
        end = self.hooks.clock() + self.settings.hook_phase_timeout  # the runners' clock
        for runner in (self.hooks, self.foreign):
            if runner is not None:
                runner.phase_end = end

    def _refine_record(self, started: str, plan: FreezePlan, results: list[MountResult]) -> None:
        """Note which planned mounts were really frozen (so an emergency thaw leaves a
        foreign freeze alone), but only if the run dir is on none of the planned
        filesystems (normally /run is a tmpfs): a write to a frozen one would hang."""
        planned = {fs.dev for fs in plan.order}
        try:
            st = os.stat(self.paths.run)
            # mountinfo's dev, not st_dev alone: a btrfs subvolume has its own st_dev.
            owner = owner_of(os.path.realpath(self.paths.run), read_mountinfo(self.paths.proc))
        except (OSError, HvGuestError):
            return
        if f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}" in planned:
            return
        if owner is not None and owner.dev in planned:
            return
        mounts = [
            {"mount_point": r.mount_point, "dev": r.dev, "state": r.state}
            for r in results[: len(plan.order)]
        ]
        try:
            write_record(self.paths, {"pid": os.getpid(), "started": started, "mounts": mounts})
        except OSError:
            pass  # the planned record stays; logged nothing: logging is held

    def _failed(
        self, started: str, reason: str, results: list[MountResult], elapsed: float = 0.0
    ) -> FreezeDone:
        self.last_freeze = _summary(started, False, reason, results, elapsed)
        self.stats["failed"] += 1
        self.stats["last_failed"] = time.time()
        self.state.record_error(f"FREEZE failed: {reason}", "see 'hvguestctl vss status'")
        self._log_guard_problems()
        return FreezeDone(False, reason)

    # -- THAW -------------------------------------------------------------------------

    def thaw(self, why: ThawWhy) -> ThawDone:
        """FITHAW only: the caller answers the host, then calls ``after_thaw``."""
        self._thawed = self.engine.frozen_mounts()
        try:
            outcome = self.engine.thaw()
        except BaseException:
            self.release_io()
            raise
        if self.last_freeze is not None:
            self.last_freeze["thaw"] = {
                "why": why, "ok": outcome.ok, "reason": outcome.reason, "time": utc_now(),
            }
            self.last_freeze["mounts"] = [r.to_dict() for r in outcome.results]
        if not outcome.ok:
            self.state.record_error(f"THAW: {outcome.reason}")
        self.state.update(
            state="ready", details={"frozen": False, "frozen_since": None, "frozen_mounts": []}
        )
        return ThawDone(outcome.ok, outcome.reason)

    def after_thaw(self, why: ThawWhy) -> None:
        """The host has its answer: write again, say what happened, run thaw hooks."""
        self.release_io()
        clear_record(self.paths)
        self._log_guard_problems()
        thawed = ", ".join(self._thawed) or "nothing"
        if why == "auto":
            log.warning("THAW did not come within %g s: thawed %s on our own",
                        self.settings.auto_thaw, thawed)
        elif why == "stop":
            log.warning("stopping while frozen: thawed %s", thawed)
        with self._busy_with_hooks():
            self._phase()
            errors = self.foreign.thaw() if self.foreign is not None else []
            errors += self.hooks.thaw() if self.hooks is not None else []
        for error in errors:
            log.warning("%s", error)
            self.state.record_error(f"thaw hook: {error}")
        self._record_hooks()

    # -- shared -----------------------------------------------------------------------

    def release_io(self) -> None:
        hvlog.flush()
        self.state.release()

    def _log_guard_problems(self) -> None:
        for problem in self.guard.problems if self.guard is not None else []:
            log.warning("%s", problem)

    def _busy_with_hooks(self) -> AbstractContextManager[None]:
        """Hooks block the loop thread, each phase within hook_phase_timeout:
        keep the watchdog fed meanwhile (plus a margin for the last reads)."""
        return self.runtime.keepalive(self.settings.hook_phase_timeout + 5)

    def _hooks_owed(self, hooks: list[Hook], argument: str) -> None:
        """The guard learns which hooks are owed a thaw/freezefail at every step,
        so that they get it even if this process dies (memory only: nothing is
        written while filesystems may be frozen)."""
        if self.guard is None or self.hooks is None:
            return
        self.guard.hooks_owed(
            hooks, argument, dict(self.hooks.env), self.hooks.timeout, self.hooks.total_timeout
        )

    def _foreign_owed(self, calls: list[tuple[ForeignHook, Call]], kind: str) -> None:
        """As ``_hooks_owed``, for the other agents' scripts."""
        if self.guard is None or self.foreign is None:
            return
        self.guard.foreign_owed(calls, kind, dict(self.foreign.env), self.foreign.timeout,
                                self.foreign.total_timeout)

    def _unwind_hooks(self, reason: str) -> None:
        if self.hooks is None:
            return
        with self._busy_with_hooks():
            self._phase()
            errors = self.foreign.freeze_failed(reason) if self.foreign is not None else []
            errors += self.hooks.freeze_failed(reason)
        for error in errors:
            log.warning("%s", error)
        self._record_hooks()

    def _record_hooks(self) -> None:
        if self.last_freeze is not None and self.hooks is not None:
            runs = self.hooks.runs + (self.foreign.runs if self.foreign is not None else [])
            self.last_freeze["hooks"] = [r.to_dict() for r in runs]
            self.stats["hooks_run"] += sum(1 for r in runs if r.started)
            self.stats["hooks_failed"] += sum(1 for r in runs if r.error)


def _summary(
    started: str, ok: bool, reason: str, results: list[MountResult], elapsed: float
) -> dict[str, Any]:
    return {
        "time": started,
        "ok": ok,
        "reason": reason,
        "freeze_ms": round(elapsed, 3),
        "mounts": [r.to_dict() for r in results],
        "hooks": [],
    }
