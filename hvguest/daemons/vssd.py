"""hvguest-vssd: freezes and thaws filesystems for the host's live backups.

The role (hvguest.roles.vss) decides; ``FreezeWork`` (vss_actions) carries out
the check, freeze and thaw it asks for; the channel runner (daemons/channel.py)
owns the device, its re-opening and the state file. This module joins them: it
feeds messages and outcomes to the role and carries out each ``Step``, keeps the
auto-thaw timer, and thaws when the daemon stops or the device fails.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from hvguest.config import load_config
from hvguest.daemon import Runtime, Timer
from hvguest.daemons.channel import Channel, run_daemon
from hvguest.daemons.common import daemon_arg_parser, start_daemon
from hvguest.daemons.vss_actions import FreezeWork, make_plan
from hvguest.errors import ConfigError, HvGuestError, TransportError
from hvguest.paths import Paths
from hvguest.roles.step import Log, Step
from hvguest.roles.vss import (
    Action,
    Answered,
    ArmAutoThaw,
    AutoThawDue,
    CancelAutoThaw,
    CheckCapability,
    Freeze,
    Stopping,
    Thaw,
    VssRole,
)
from hvguest.state import StatePublisher
from hvguest.transport.base import Transport
from hvguest.transport.chardev import vss_transport
from hvguest.vss.freeze import FreezeEngine, FreezeObserver, FsOps
from hvguest.vss.guard_client import GuardClient
from hvguest.vss.record import record_path
from hvguest.vss.settings import VssSettings

log = logging.getLogger(__name__)

SERVICE = "vss"
# A guard that failed to start (a machine too loaded to import it in time, an
# interpreter being upgraded) is tried again this often, not only at the next FREEZE.
GUARD_RETRY = 30.0
REMEDY = "the VSS device is back once hv_utils is loaded"


class VssService:
    """The VSS channel's service: role, freeze work, auto-thaw timer, guard."""

    def __init__(
        self,
        paths: Paths,
        settings: VssSettings,
        runtime: Runtime,
        *,
        transport: Transport | None = None,
        ops: FsOps | None = None,
        observer: FreezeObserver | None = None,
        state: StatePublisher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.runtime, self.clock = settings, runtime, clock
        self.state = state or StatePublisher(SERVICE, paths)
        self.channel = Channel(
            SERVICE, runtime, transport if transport is not None else vss_transport(paths),
            state=self.state, remedy=REMEDY, exit_when_gone=True, clock=clock,
        )
        self.guard: GuardClient | None = None
        if observer is None and settings.guard:
            self.guard = GuardClient(
                settings.auto_thaw, record=record_path(paths), loop=runtime,
                on_change=self._guard_changed,
            )
            observer = self.guard
        self.engine = FreezeEngine(ops, foreign_freeze=settings.foreign_freeze, observer=observer)
        self.role = VssRole(
            auto_thaw=settings.auto_thaw, hbu_flag_in_status=settings.hot_backup_flag_in_status
        )
        self.work = FreezeWork(paths, settings, runtime, self.engine, self.guard, self.state, clock)
        # Nothing is written while frozen: the state file waits for the thaw.
        self.channel.can_publish = lambda: not self.engine.is_frozen and not self.state.held
        self._auto_timer: Timer | None = None
        self._guard_retry: Timer | None = None
        self._stopping = False

    # -- lifecycle (the channel calls registered/serve/lost) -----------------------

    def start(self) -> None:
        """Open the device (TransportError if absent), start the guard, serve."""
        self.channel.start(self)
        # Registered after the channel's close: stop callbacks run last first, so
        # the thaw comes before the device is closed.
        self.runtime.on_stop(self.stop)

    def registered(self, version: str) -> None:
        if self.guard is not None:
            self.guard.ensure_running()  # a failure is logged and refuses FREEZE

    def stop(self) -> None:
        self._stopping = True
        if self._guard_retry is not None:
            self._guard_retry.cancel()
            self._guard_retry = None
        self.run(self.role.complete(Stopping(), self.clock()))
        if self.guard is not None:
            self.guard.close()
        self.state.update(state="stopped", details=self.details())
        self.state.publish()

    def serve(self, message: bytes) -> None:
        self.run(self.role.handle(message, self.clock()))
        self._publish()

    def lost(self, error: TransportError) -> None:
        # The kernel dropped our registration (late reply, hibernation, reset): the
        # host will not get our answer and takes the freeze as failed, so nothing
        # may stay frozen.
        if self.engine.is_frozen:
            log.error("the device failed while filesystems were frozen (%s): thawing", error)
        self.run(self.role.complete(Stopping(), self.clock()))
        self._publish()

    # -- steps -----------------------------------------------------------------------

    def run(self, step: Step[Action]) -> None:
        """Carry out the step's actions in order, then send its reply."""
        for action in step.actions:
            self._carry_out(action)
        if step.reply is not None:
            self.channel.send(step.reply)

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, Log):
            fields = {f"HVGUEST_{k}": v for k, v in action.fields.items()}
            log.log(action.level, action.message, *action.args, extra=fields)
        elif isinstance(action, Answered):
            self.state.record_op(action.op, action.status, action.detail)
        elif isinstance(action, CheckCapability):
            self.run(self.role.complete(self.work.check(), self.clock()))
        elif isinstance(action, Freeze):
            self.run(self.role.complete(self.work.freeze(), self.clock()))
        elif isinstance(action, Thaw):
            self.run(self.role.complete(self.work.thaw(action.why), self.clock()))
            self.work.after_thaw(action.why)
        elif isinstance(action, ArmAutoThaw):
            self._cancel_timer()
            delay = max(0.0, action.at - self.clock())
            self._auto_timer = self.runtime.call_later(delay, self._auto_thaw)
        else:
            assert isinstance(action, CancelAutoThaw)
            self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._auto_timer is not None:
            self._auto_timer.cancel()
            self._auto_timer = None

    def _auto_thaw(self) -> None:
        self._auto_timer = None
        self.run(self.role.complete(AutoThawDue(), self.clock()))
        self._publish()

    # -- state ---------------------------------------------------------------------

    def _publish(self) -> None:
        self.channel.dirty = True
        self.channel.publish_if_dirty()

    def _guard_changed(self) -> None:
        """The thaw guard started, failed or died: say so in the state file, and try
        a guard that failed to start again later."""
        guard = self.guard
        if guard is not None and guard.status.get("reason"):
            self.state.record_error(guard.status["reason"], "FREEZE is refused until it runs")
        if (guard is not None and guard.status.get("state") == "failed"
                and self._guard_retry is None and not self._stopping):
            self._guard_retry = self.runtime.call_later(GUARD_RETRY, self._retry_guard)
        self._publish()

    def _retry_guard(self) -> None:
        self._guard_retry = None
        if self.guard is not None and not self._stopping:
            self.guard.ensure_running()  # failing again schedules the next try

    def apply_settings(self, settings: VssSettings) -> None:
        """New settings (SIGHUP); a freeze in progress keeps its auto-thaw deadline."""
        self.settings = self.work.settings = settings
        self.engine.foreign_freeze = settings.foreign_freeze
        self.role.auto_thaw = settings.auto_thaw
        self.role.hbu_flag_in_status = settings.hot_backup_flag_in_status
        if self.guard is not None:
            self.guard.bound = settings.auto_thaw
        self._publish()

    def details(self) -> dict[str, Any]:
        return {
            "frozen": self.engine.is_frozen,
            "frozen_mounts": self.engine.frozen_mounts(),
            "auto_thaw": self.settings.auto_thaw,
            "guard_pid": self.guard.pid if self.guard and self.guard.alive() else None,
            "guard": self.guard.status if self.guard else {"state": "disabled"},
            "last_freeze": self.work.last_freeze,
            "stats": dict(self.work.stats),
        }

    def status_text(self) -> str:
        if self.engine.is_frozen:
            return f"frozen: {', '.join(self.engine.frozen_mounts())}"
        last = self.work.last_freeze
        if last is None:
            return "no freeze yet"
        return f"last freeze {'ok' if last['ok'] else 'failed'} at {last['time']}"


def main(argv: list[str] | None = None) -> int:
    # A module imported lazily while frozen would try to write its .pyc to a
    # frozen filesystem and hang: never write bytecode.
    sys.dont_write_bytecode = True
    parser = daemon_arg_parser("hvguest-vssd", "Freeze and thaw filesystems for Hyper-V backups.",
                               os_etc=True)  # the other agents' freeze scripts live there
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

    def ready() -> str:
        try:
            note = f", {len(make_plan(paths, service.settings).order)} filesystem(s) freezable"
        except HvGuestError as exc:
            note = f"; cannot plan a freeze: {exc}"
        return f"registered with {service.channel.transport.path}{note}"

    runtime.on_reload(reload)
    return run_daemon(runtime, service.start, ready, state=service.state,
                      cleanup=service.channel.transport.close)


if __name__ == "__main__":
    sys.exit(main())
