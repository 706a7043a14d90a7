"""hvguest-vssd: freezes and thaws filesystems for the host's live backups.

The role (hvguest.roles.vss) decides; this module does the I/O: the device, the
mount plan, hooks, FIFREEZE/FITHAW, the thaw guard, the auto-thaw timer, logging
held in memory and state publishing held while anything is frozen.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from hvguest import log as hvlog
from hvguest.backoff import Backoff
from hvguest.config import load_config
from hvguest.daemon import Runtime, Timer
from hvguest.daemons.common import daemon_arg_parser, start_daemon
from hvguest.errors import ConfigError, HvGuestError, TransportError
from hvguest.paths import Paths
from hvguest.roles.vss import (
    Action,
    ArmAutoThaw,
    CancelAutoThaw,
    CheckCapability,
    Freeze,
    Reply,
    Thaw,
    VssRole,
)
from hvguest.state import StatePublisher, utc_now
from hvguest.transport.chardev import vss_transport
from hvguest.vss.freeze import FreezeEngine, FreezeObserver, FsOps, MountResult
from hvguest.vss.guard import GuardClient
from hvguest.vss.hooks import Hook, HookRunner, discover
from hvguest.vss.mounts import FreezePlan, SysfsBlock, build_plan, owner_of, read_mountinfo
from hvguest.vss.record import clear_record, record_path, write_record
from hvguest.vss.settings import VssSettings
from hvguest.wire.status import status_name

log = logging.getLogger(__name__)

SERVICE = "vss"

# Back-off between attempts to re-register after the device failed.


def hook_dirs(paths: Paths) -> list[str]:
    """/etc first: a hook there replaces the packaged one of the same name."""
    return [os.path.join(paths.etc, "vss.d"), os.path.join(paths.lib, "vss.d")]


def make_plan(paths: Paths, settings: VssSettings) -> FreezePlan:
    return build_plan(
        read_mountinfo(paths.proc),
        SysfsBlock(paths.sys),
        exclude=settings.exclude,
        include=settings.include,
    )


class VssService:
    """One registered VSS device and everything a freeze/thaw cycle needs."""

    def __init__(
        self,
        paths: Paths,
        settings: VssSettings,
        runtime: Runtime,
        *,
        transport: Any = None,
        ops: FsOps | None = None,
        observer: FreezeObserver | None = None,
        state: StatePublisher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.runtime = runtime
        self.clock = clock
        self.transport = transport if transport is not None else vss_transport(paths)
        self.guard: GuardClient | None = None
        if observer is None and settings.guard:
            self.guard = GuardClient(
                settings.auto_thaw, record=record_path(paths), loop=runtime, on_change=self._guard
            )
            observer = self.guard
        self.engine = FreezeEngine(ops, foreign_freeze=settings.foreign_freeze, observer=observer)
        self.role = VssRole(
            auto_thaw=settings.auto_thaw, hbu_flag_in_status=settings.hot_backup_flag_in_status
        )
        self.state = state or StatePublisher(SERVICE, paths)
        self.hooks: HookRunner | None = None
        self._auto_timer: Timer | None = None
        self._last_freeze: dict[str, Any] | None = None
        self.backoff = Backoff()  # re-registration: 0.1 s doubling to 30 s
        self._reopen_timer: Timer | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if hasattr(self.transport, "open") and not self._is_open():
            self.transport.open()
        if self.guard is not None:
            self.guard.ensure_running()  # a failure is logged and refuses FREEZE
        self.runtime.add_reader(self.transport, self.on_readable)
        self.runtime.on_stop(self.stop)
        self.state.update(
            state="ready",
            device=getattr(self.transport, "path", None),
            details=self._details(),
        )
        self.state.publish()

    def _is_open(self) -> bool:
        return bool(getattr(self.transport, "is_open", False))

    def stop(self) -> None:
        self.execute(self.role.on_stop())
        if self.guard is not None:
            self.guard.close()
        self.state.update(state="stopped", details=self._details())
        self.state.publish()

    # -- device ------------------------------------------------------------------------

    def on_readable(self) -> None:
        try:
            data = self.transport.read_packet()
        except TransportError as exc:
            self._device_failed(exc)
            return
        if not data:
            return
        self.execute(self.role.on_message(data, self.clock()))

    def _device_failed(self, exc: Exception) -> None:
        # The kernel dropped our registration (late reply, hibernation, reset): if
        # the host thinks the freeze failed, nothing may stay frozen.
        if self.engine.is_frozen:
            self.execute(self.role.on_stop())
        if self._reopen_timer is not None:
            return  # already waiting to re-register
        log.warning("%s; re-registering", exc)
        self.runtime.remove_reader(self.transport)
        # Not at once: a device that opens and fails again must not spin.
        self._reopen_timer = self.runtime.call_later(self.backoff.next_delay(), self._reopen)

    def _reopen(self) -> None:
        self._reopen_timer = None
        try:
            self.transport.reopen()
        except TransportError as again:
            path = getattr(self.transport, "path", None)
            if path and not os.path.exists(path):
                # The host withdrew the service (or hv_utils went away): nothing to
                # serve, and not a failure of this daemon. systemd's BindsTo stops
                # the unit too; exiting 0 keeps it from showing as failed.
                log.info("%s is gone: the host no longer offers VSS; exiting", path)
                self.runtime.stop(0)
                return
            delay = self.backoff.next_delay()
            log.error("cannot re-register: %s; retrying in %g s", again, delay)
            self.state.record_error(str(again), "the VSS device is back once hv_utils is loaded")
            self._reopen_timer = self.runtime.call_later(delay, self._reopen)
            return
        self.runtime.add_reader(self.transport, self.on_readable)

    def send(self, reply: Reply) -> None:
        level = logging.INFO if reply.status == 0 or reply.op == "HOT_BACKUP" else logging.WARNING
        log.log(
            level,
            "%s -> %s%s",
            reply.op,
            status_name(reply.status),
            f": {reply.detail}" if reply.detail else "",
        )
        self.state.record_op(reply.op, status_name(reply.status), reply.detail)
        try:
            self.transport.write_packet(reply.data)
        except TransportError as exc:
            if reply.op == "FREEZE" and self.engine.is_frozen:
                log.error("the host did not get the FREEZE reply (%s): thawing", exc)
            self._device_failed(exc)
            return
        self.backoff.healthy()  # a request served: the next failure starts over

    # -- actions --------------------------------------------------------------------------

    def execute(self, actions: list[Action]) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, Reply):
                self.send(action)
            elif isinstance(action, CheckCapability):
                pending.extend(self._check())
            elif isinstance(action, Freeze):
                pending.extend(self._freeze())
            elif isinstance(action, Thaw):
                pending.extend(self._thaw(action.why))
            elif isinstance(action, ArmAutoThaw):
                self._cancel_timer()
                self._auto_timer = self.runtime.call_later(
                    max(0.0, action.at - self.clock()), self._auto_thaw
                )
            elif isinstance(action, CancelAutoThaw):
                self._cancel_timer()
        if not self.engine.is_frozen and not self.state.held:
            self.state.update(details=self._details())
            self.state.publish()

    def _cancel_timer(self) -> None:
        if self._auto_timer is not None:
            self._auto_timer.cancel()
            self._auto_timer = None

    def _auto_thaw(self) -> None:
        self._auto_timer = None
        self.execute(self.role.on_timer(self.clock()))

    def _check(self) -> list[Action]:
        try:
            plan = make_plan(self.paths, self.settings)
        except HvGuestError as exc:
            return self.role.capability_result(False, f"live backup not possible: {exc}")
        n = len(plan.order)
        detail = f"{n} filesystem(s) to freeze" if n else "nothing to freeze (crash-consistent)"
        return self.role.capability_result(True, detail)

    def _freeze(self) -> list[Action]:
        try:
            return self._do_freeze()
        except Exception as exc:
            # A bug must not leave anything frozen, nor logging held.
            if self.engine.is_frozen:
                self.engine.thaw()
            self._release_io()
            clear_record(self.paths)
            log.exception("FREEZE failed unexpectedly; everything thawed")
            reason = f"internal error: {exc!r}"
            self._unwind_hooks(reason)  # a hook that got freeze gets its freezefail
            return self._freeze_failed(utc_now(), reason, [])

    def _do_freeze(self) -> list[Action]:
        started = utc_now()
        t0 = self.clock()
        try:
            plan = make_plan(self.paths, self.settings)
        except HvGuestError as exc:
            return self._freeze_failed(started, f"cannot plan the freeze: {exc}", [])
        problem = self.guard.ensure_running() if self.guard is not None else None
        if problem is not None:
            return self._freeze_failed(started, problem, [])
        hooks = discover(hook_dirs(self.paths)) if self.settings.hooks else None
        if hooks is not None:
            for refused in hooks.refused:
                log.warning("hook %s refused: %s", refused.path, refused.reason)
        env = {
            "HVGUEST_VSS_MOUNTS": "\n".join(plan.mount_points()),
            "HVGUEST_VSS_HOOK_TIMEOUT": f"{self.settings.hook_timeout:g}",
            "HVGUEST_VSS_AUTO_THAW": f"{self.settings.auto_thaw:g}",
            "HVGUEST_ETC_DIR": self.paths.etc,
        }
        self.hooks = HookRunner(
            hooks.hooks if hooks else [],
            timeout=self.settings.hook_timeout,
            total_timeout=self.settings.hook_phase_timeout,
            failure_argument=self.settings.failure_hook_argument,
            env=env,
            observer=self._hooks_owed,
        )
        with self._busy_with_hooks():
            hook_error = self.hooks.freeze()
        if hook_error is not None:
            reason = f"freeze hook failed: {hook_error}"
            self._unwind_hooks(reason)
            return self._freeze_failed(started, reason, [])
        # Last chance to write anything: from here until the thaw, no disk I/O.
        try:
            write_record(
                self.paths,
                {
                    "pid": os.getpid(),
                    "started": started,
                    "mounts": [{"mount_point": fs.mount_point, "dev": fs.dev} for fs in plan.order],
                },
            )
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
            self._release_io()
            clear_record(self.paths)
            self._unwind_hooks(outcome.reason)
            return self._freeze_failed(started, outcome.reason, outcome.results, elapsed)
        if self.hooks is not None:
            self.hooks.frozen()
        self._last_freeze = self._summary(started, True, outcome.reason, outcome.results, elapsed)
        self._refine_record(started, plan, outcome.results)
        return self.role.freeze_result(True, outcome.reason, self.clock())

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

    def _freeze_failed(
        self, started: str, reason: str, results: list[MountResult], elapsed: float = 0.0
    ) -> list[Action]:
        self._last_freeze = self._summary(started, False, reason, results, elapsed)
        self.state.record_error(f"FREEZE failed: {reason}", "see 'hvguestctl vss status'")
        for problem in self.guard.problems if self.guard else []:
            log.warning("%s", problem)
        return self.role.freeze_result(False, reason, self.clock())

    def _busy_with_hooks(self) -> Any:
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

    def _unwind_hooks(self, reason: str) -> None:
        if self.hooks is None:
            return
        with self._busy_with_hooks():
            errors = self.hooks.freeze_failed(reason)
        for error in errors:
            log.warning("%s", error)
        self._record_hooks()

    def _thaw(self, why: str) -> list[Action]:
        frozen = self.engine.frozen_mounts()
        try:
            outcome = self.engine.thaw()
        except BaseException:
            self._release_io()
            raise
        if self._last_freeze is not None:
            self._last_freeze["thaw"] = {
                "why": why,
                "ok": outcome.ok,
                "reason": outcome.reason,
                "time": utc_now(),
            }
            self._last_freeze["mounts"] = [r.to_dict() for r in outcome.results]
        if not outcome.ok:
            self.state.record_error(f"THAW: {outcome.reason}")
        self.state.update(
            state="ready", details={"frozen": False, "frozen_since": None, "frozen_mounts": []}
        )
        # Answer the host first (log records and state are still held in memory, so
        # this costs no disk I/O): THAW has a 30 s kernel deadline, and neither the
        # hooks nor our bookkeeping change whether the filesystems were held frozen.
        self.execute(self.role.thaw_result(outcome.ok, outcome.reason, self.clock()))
        self._release_io()
        clear_record(self.paths)
        for problem in self.guard.problems if self.guard else []:
            log.warning("%s", problem)
        if why == "auto":
            log.warning(
                "THAW did not come within %g s: thawed %s on our own",
                self.settings.auto_thaw,
                ", ".join(frozen) or "nothing",
            )
        elif why == "stop":
            log.warning("stopping while frozen: thawed %s", ", ".join(frozen) or "nothing")
        with self._busy_with_hooks():
            errors = self.hooks.thaw() if self.hooks is not None else []
        for error in errors:
            log.warning("%s", error)
            self.state.record_error(f"thaw hook: {error}")
        self._record_hooks()
        return []

    def _release_io(self) -> None:
        hvlog.flush()
        self.state.release()

    def _record_hooks(self) -> None:
        if self._last_freeze is not None and self.hooks is not None:
            self._last_freeze["hooks"] = [r.to_dict() for r in self.hooks.runs]

    def _summary(
        self, started: str, ok: bool, reason: str, results: list[MountResult], elapsed: float
    ) -> dict[str, Any]:
        summary = {
            "time": started,
            "ok": ok,
            "reason": reason,
            "freeze_ms": round(elapsed, 3),
            "mounts": [r.to_dict() for r in results],
            "hooks": [],
        }
        return summary

    def _guard(self) -> None:
        """The thaw guard started, failed or died: say so in the state file."""
        if getattr(self, "state", None) is None:
            return
        if self.guard is not None and self.guard.status.get("reason"):
            self.state.record_error(self.guard.status["reason"], "FREEZE is refused until it runs")
        self.state.update(details=self._details())
        if not self.state.held:
            self.state.publish()

    def apply_settings(self, settings: VssSettings) -> None:
        """New settings (SIGHUP); a freeze in progress keeps its auto-thaw deadline."""
        self.settings = settings
        self.engine.foreign_freeze = settings.foreign_freeze
        self.role.auto_thaw = settings.auto_thaw
        self.role.hbu_flag_in_status = settings.hot_backup_flag_in_status
        if self.guard is not None:
            self.guard.bound = settings.auto_thaw
        self.state.update(details=self._details())
        if not self.state.held:
            self.state.publish()

    def _details(self) -> dict[str, Any]:
        return {
            "frozen": self.engine.is_frozen,
            "frozen_mounts": self.engine.frozen_mounts(),
            "auto_thaw": self.settings.auto_thaw,
            "guard_pid": self.guard.pid if self.guard and self.guard.alive() else None,
            "guard": self.guard.status if self.guard else {"state": "disabled"},
            "last_freeze": self._last_freeze,
        }


def main(argv: list[str] | None = None) -> int:
    # A module imported lazily while frozen would try to write its .pyc to a
    # frozen filesystem and hang: never write bytecode.
    sys.dont_write_bytecode = True
    parser = daemon_arg_parser("hvguest-vssd", "Freeze and thaw filesystems for Hyper-V backups.")
    parser.add_argument("--lib-dir", metavar="DIR", help="instead of /usr/lib/hvguest")
    args = parser.parse_args(argv)
    paths, config = start_daemon(SERVICE, args)
    if args.lib_dir:
        from dataclasses import replace

        paths = replace(paths, lib=os.path.abspath(args.lib_dir))
    settings = config.get(VssSettings)
    runtime = Runtime("hvguest-vssd")
    service = VssService(paths, settings, runtime)
    config_path = args.config or paths.config_file

    def reload() -> None:
        try:
            fresh = load_config(config_path, missing_ok=args.config is None).get(VssSettings)
        except ConfigError as exc:
            log.error("configuration not reloaded: %s", exc)
            return
        service.apply_settings(fresh)
        log.info("configuration reloaded from %s", config_path)

    runtime.on_reload(reload)
    try:
        service.start()
    except TransportError as exc:
        log.error("%s", exc)
        runtime.close()
        return 1
    plan_note = ""
    try:
        plan_note = f", {len(make_plan(paths, settings).order)} filesystem(s) freezable"
    except HvGuestError as exc:
        plan_note = f"; cannot plan a freeze: {exc}"
    runtime.ready(f"registered with {service.transport.path}{plan_note}")
    try:
        return runtime.run()
    finally:
        service.transport.close()
        runtime.close()


if __name__ == "__main__":
    sys.exit(main())
