"""Runs the foreign conventions' scripts of one freeze/thaw cycle (``foreign``).

The same contract as ``hooks.HookRunner``: ``freeze()`` (stops at the first
failure its convention counts as fatal), ``frozen()``, ``thaw()`` and
``freeze_failed()``; the observer (the thaw guard) learns at every step which
calls are owed, in the order they would run, so that they run even if the
daemon dies. Groups thaw last-first; inside a group, in reverse unless the
convention thaws in freeze order (qemu's dispatcher).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Literal

from hvguest import hookrun
from hvguest.errors import HookError
from hvguest.vss.foreign import Call, ForeignHook, ForeignPlan
from hvguest.vss.hooks import STDERR_TAIL, HookRun, as_error

log = logging.getLogger(__name__)

Kind = Literal["thaw", "fail"]
# (hook, call) pairs owed, in order; "thaw" or "fail".
ForeignObserver = Callable[[list[tuple[ForeignHook, Call]], str], None]


def run_call(
    label: str, call: Call, *, timeout: float, env: Mapping[str, str],
    ok_codes: tuple[int, ...] = (0,),
) -> HookRun:
    """Run one call; never raises."""
    argument = " ".join(call.args)
    if call.refused is not None:
        return HookRun(label, argument, None, 0.0, f"refused: {call.refused}", started=False)
    out = hookrun.run(
        hookrun.Hook(label, call.path), list(call.args), timeout=timeout,
        interpreter=call.interpreter,
        env={**env, "HVGUEST_VSS_OPERATION": call.args[0] if call.args else ""},
    )
    error = out.error
    if error.startswith("exited with") and out.returncode in ok_codes:
        error = ""  # a status the convention counts as success (Azure's 2: warning)
    if error and out.output:
        error += ": " + out.output[-STDERR_TAIL:]
    return HookRun(label, argument, out.returncode, out.seconds, error, out.started)


class ForeignRunner:
    def __init__(
        self,
        plan: ForeignPlan,
        *,
        timeout: float,
        total_timeout: float,
        env: Mapping[str, str] | None = None,
        observer: ForeignObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.timeout = timeout
        self.total_timeout = total_timeout
        self.env = dict(env or {})
        self.observer = observer
        self.clock = clock
        self.phase_end: float | None = None  # shared with hvguest's own hooks
        self.reached: list[tuple[int, ForeignHook]] = []  # (group, hook), freeze order
        self.runs: list[HookRun] = []
        self.kind: Kind = "fail"

    def _deadline(self) -> float:
        return self.phase_end if self.phase_end is not None else self.clock() + self.total_timeout

    def owed(self, kind: Kind) -> list[tuple[ForeignHook, Call]]:
        """What ``kind`` would run now, in order."""
        out: list[tuple[ForeignHook, Call]] = []
        for g in reversed(range(len(self.plan.groups))):
            hooks = [h for gi, h in self.reached if gi == g]
            if self.plan.groups[g].thaw_reversed:
                hooks.reverse()
            for hook in hooks:
                call = hook.thaw if kind == "thaw" else hook.fail
                if call is not None:
                    out.append((hook, call))
        return out

    def _tell(self) -> None:
        if self.observer is not None and self.plan.groups:
            self.observer(self.owed(self.kind), self.kind)

    def _run(self, hook: ForeignHook, call: Call, deadline: float) -> HookRun:
        budget = hookrun.budget(hook.timeout or self.timeout, deadline - self.clock())
        if budget <= 0:
            run = HookRun(hook.label, " ".join(call.args), None, 0.0,
                          f"not run: the {self.total_timeout:g} s budget of this phase is used up",
                          started=False)
        else:
            run = run_call(hook.label, call, timeout=budget, env=self.env,
                           ok_codes=hook.ok_codes)
        log.info("ran %s (%s): %s in %.1f s", hook.label, call.show(), run.error or "ok",
                 run.seconds)
        self.runs.append(run)
        return run

    def freeze(self) -> HookError | None:
        self.reached, self.runs, self.kind = [], [], "fail"
        deadline = self._deadline()
        for g, group in enumerate(self.plan.groups):
            for hook in group.hooks:
                self.reached.append((g, hook))
                self._tell()
                if hook.freeze is None:
                    continue  # a legacy slot with only a thaw script: owed its thaw
                run = self._run(hook, hook.freeze, deadline)
                if not run.error:
                    continue
                if not run.started or (hook.aborts and not hook.fail_self):
                    self.reached.pop()  # never ran, or its convention owes it nothing
                    self._tell()
                if hook.aborts:
                    return as_error(run)
                log.warning("%s freeze failed (its convention goes on): %s", hook.label,
                            run.error)
        return None

    def frozen(self) -> None:
        self.kind = "thaw"
        self._tell()

    def thaw(self) -> list[HookError]:
        return self.unwind("thaw")

    def freeze_failed(self, reason: str) -> list[HookError]:
        return self.unwind("fail", {"HVGUEST_VSS_FAILURE": reason})

    def unwind(self, kind: Kind, extra: Mapping[str, str] | None = None) -> list[HookError]:
        """Run every owed ``kind`` call; a failure does not stop the others and is
        reported at the end."""
        self.kind = kind
        env_before = self.env
        self.env = {**self.env, **(extra or {})}
        deadline = self._deadline()
        errors: list[HookError] = []
        try:
            for hook, call in self.owed(kind):
                run = self._run(hook, call, deadline)
                self.reached = [(g, h) for g, h in self.reached if h is not hook]
                self._tell()
                if run.error:
                    errors.append(as_error(run))
        finally:
            self.env = env_before
            self.reached = []
            self._tell()
        return errors
