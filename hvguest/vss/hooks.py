"""Freeze/thaw hooks: executables in /etc/hvguest/vss.d and /usr/lib/hvguest/vss.d.

As with open-vm-tools' backupScripts.d: before the first FIFREEZE every hook runs
with ``freeze`` in name order; after the last FITHAW they run with ``thaw`` in
reverse order; when the freeze fails, every hook that was started with ``freeze``
gets ``freezefail`` (or ``thaw``, per configuration), in reverse order. A hook in
/etc replaces a packaged hook of the same name. Hooks never run while anything is
frozen: they could block writing to a frozen filesystem.

Which files may run, and how, is hvguest.hookrun's business (the same rules as
the pre-shutdown hooks). Each phase (freeze; thaw or freezefail) has a total
budget besides the per-hook one, so that a stop in the middle of a backup ends
within the unit's stop timeout. The runner tells an observer (the thaw guard)
which hooks are owed a ``thaw``/``freezefail``, so that they get it even if the
daemon dies.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hvguest import hookrun
from hvguest.errors import HookError

# Discovery and the checks are hookrun's (shared with the pre-shutdown hooks);
# pass /etc first: a hook there masks the packaged one of the same name.
from hvguest.hookrun import Hook, HookSet, Refused, discover

log = logging.getLogger(__name__)

STDERR_TAIL = 2000

__all__ = ["Hook", "HookRun", "HookRunner", "HookSet", "Refused", "discover", "run_hook"]

def hook_dirs(etc: str, lib: str) -> list[str]:
    """Where VSS hooks live; /etc first: a hook there replaces the packaged one of
    the same name."""
    return [os.path.join(etc, "vss.d"), os.path.join(lib, "vss.d")]


# (hooks owed the argument, the argument): called whenever either changes.
PendingObserver = Callable[[list[Hook], str], None]


@dataclass
class HookRun:
    hook: str
    argument: str
    returncode: int | None
    seconds: float
    error: str = ""
    started: bool = True  # False: refused or not run, so owed nothing

    def to_dict(self) -> dict[str, object]:
        return {
            "hook": self.hook,
            "argument": self.argument,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


def run_hook(
    hook: Hook, argument: str, *, timeout: float, env: Mapping[str, str], owner_uid: int = 0
) -> HookRun:
    """Run one hook; never raises."""
    out = hookrun.run(
        hook, [argument], timeout=timeout, owner_uid=owner_uid,
        env={**env, "HVGUEST_VSS_OPERATION": argument},
    )
    error = out.error
    if error and out.output:
        error += ": " + out.output[-STDERR_TAIL:]
    return HookRun(hook.name, argument, out.returncode, out.seconds, error, out.started)


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
        total_timeout: float | None = None,
        failure_argument: str = "freezefail",
        env: Mapping[str, str] | None = None,
        observer: PendingObserver | None = None,
        owner_uid: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hooks = list(hooks)
        self.timeout = timeout
        self.total_timeout = total_timeout if total_timeout is not None else timeout * max(
            1, len(self.hooks)) + 2 * hookrun.GRACE * len(self.hooks)
        self.failure_argument = failure_argument
        self.env = dict(env or {})
        self.observer = observer
        self.owner_uid = owner_uid
        self.clock = clock
        self.started: list[Hook] = []  # got "freeze", in order
        self.runs: list[HookRun] = []
        # Set by the daemon: one deadline for the phase, shared with the foreign
        # conventions' scripts (hvguest.vss.foreign_run); None: a budget of our own.
        self.phase_end: float | None = None

    def _deadline(self) -> float:
        return self.phase_end if self.phase_end is not None else self.clock() + self.total_timeout

    def _tell(self, argument: str) -> None:
        if self.observer is not None:
            self.observer(list(self.started), argument)

    def _run(self, hook: Hook, argument: str, deadline: float, env: Mapping[str, str]) -> HookRun:
        budget = hookrun.budget(self.timeout, deadline - self.clock())
        if budget <= 0:
            run = HookRun(hook.name, argument, None, 0.0,
                          f"not run: the {self.total_timeout:g} s budget of this phase is used up",
                          started=False)
        else:
            run = run_hook(hook, argument, timeout=budget, env=env, owner_uid=self.owner_uid)
        self.runs.append(run)
        return run

    def freeze(self) -> HookError | None:
        """Run ``freeze`` in name order; stop at the first failure."""
        self.started = []
        self.runs = []
        deadline = self._deadline()
        for hook in self.hooks:
            # Owed its freezefail from the moment it may have started quiescing.
            self.started.append(hook)
            self._tell(self.failure_argument)
            run = self._run(hook, "freeze", deadline, self.env)
            if not run.started:
                self.started.pop()  # never ran: owed nothing
                self._tell(self.failure_argument)
            if run.error:
                return as_error(run)
        return None

    def frozen(self) -> None:
        """The filesystems are frozen: from now on the hooks are owed ``thaw``
        (until then, a death means the freeze failed: ``freezefail``)."""
        self._tell("thaw")

    def thaw(self) -> list[HookError]:
        return self.unwind("thaw")

    def freeze_failed(self, reason: str) -> list[HookError]:
        return self.unwind(self.failure_argument, {"HVGUEST_VSS_FAILURE": reason})

    def unwind(self, argument: str, extra: Mapping[str, str] | None = None) -> list[HookError]:
        """Give ``argument`` to every hook in ``started``, last first (the guard
        uses it too, for the hooks a dead daemon still owed)."""
        errors = []
        env = {**self.env, **(extra or {})}
        deadline = self._deadline()
        self._tell(argument)
        while self.started:
            hook = self.started[-1]
            run = self._run(hook, argument, deadline, env)
            self.started.pop()
            self._tell(argument)
            if run.error:
                errors.append(as_error(run))
        return errors
