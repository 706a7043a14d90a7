"""The daemon's end of the thaw guard (the guard itself: hvguest.vss.guard).

``GuardClient`` starts the guard process with the daemon's own interpreter and
package, waits for its "ready", and reports every freeze step to it over a
SOCK_SEQPACKET socketpair (fds of the filesystems go with "arm", SCM_RIGHTS). The
guard's death is noticed at once through the event loop (its socket closes) and
it is restarted; FREEZE is refused while no guard runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Protocol

import hvguest
from hvguest import hookrun
from hvguest.state import utc_now
from hvguest.vss.foreign import Call, ForeignHook
from hvguest.vss.guard import GRACE, MAX_FDS, MAX_MESSAGE, READY

log = logging.getLogger("hvguest.vss.guard")

START_TIMEOUT = 10.0  # for the guard to import everything and say "ready"
# The guard runs with the daemon's interpreter and the daemon's own copy of the
# package, whatever the layout: -I keeps the current directory, user site and
# PYTHON* variables off sys.path, and the package's directory (the first
# argument) is put there explicitly. -B: no bytecode written, ever.
LAUNCH = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from hvguest.vss.guard import main; sys.exit(main())"
)


def package_root() -> str:
    """The directory holding the ``hvguest`` package this process imported."""
    return os.path.dirname(os.path.dirname(os.path.abspath(hvguest.__file__)))


class GuardStartError(OSError):
    pass


class ReaderLoop(Protocol):
    """What the daemon's event loop offers (hvguest.daemon.Runtime)."""

    def add_reader(self, fd: Any, callback: Callable[[], None]) -> None: ...

    def remove_reader(self, fd: Any) -> None: ...


@dataclass(eq=False)
class GuardClient:
    """The daemon's end: spawns the guard and reports each step to it.

    Implements ``FreezeObserver``. The guard counts as running only once it said
    "ready" (it imported everything it needs). Its start, failure and death are
    logged and kept in ``status``; with a ``loop``, a death is noticed at once (the
    socket closes) and the guard restarted; ``ensure_running()`` is asked before
    every freeze. A send that fails is logged (after thaw) but never blocks a freeze.
    """

    bound: float
    _: KW_ONLY
    record: str | None = None
    python: str = sys.executable
    loop: ReaderLoop | None = None
    on_change: Callable[[], None] | None = None
    problems: list[str] = field(default_factory=list, init=False)
    status: dict[str, Any] = field(default_factory=lambda: {"state": "not started"}, init=False)
    _sock: socket.socket | None = field(default=None, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _set_status(self, state: str, **fields: Any) -> None:
        self.status = {"state": state, "time": utc_now(), **fields}
        if self.on_change is not None:
            self.on_change()

    def start(self) -> None:
        """Start the guard and wait until it is ready; GuardStartError says why not."""
        if self.alive() and self._sock is not None:
            return
        self.close(quiet=True)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        argv = [self.python, "-B", "-I", "-c", LAUNCH, package_root(), "--fd"]
        try:
            self._proc = subprocess.Popen(
                [*argv, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                # Its own session: a Ctrl-C meant for the daemon must not kill it.
                start_new_session=True,
                cwd="/",
            )
        except OSError as exc:
            mine.close()
            self._failed(f"cannot start the thaw guard ({self.python}): {exc.strerror or exc}")
        finally:
            theirs.close()
        mine.settimeout(START_TIMEOUT)
        try:
            hello = mine.recv(64)
        except OSError:
            hello = b""
        mine.settimeout(None)
        if hello != READY:
            mine.close()
            proc, self._proc = self._proc, None
            assert proc is not None
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
            self._failed(
                f"the thaw guard did not start ({_exit_text(code)}; its error is in the journal)"
            )
        self._sock = mine
        if self.loop is not None:
            self.loop.add_reader(mine, self._on_guard_socket)
        log.info("thaw guard started, pid %d", self.pid)
        self._set_status("running", pid=self.pid)

    def _failed(self, reason: str) -> None:
        log.error("%s; FREEZE is refused while no guard is running", reason)
        self._set_status("failed", reason=reason)
        raise GuardStartError(reason)

    def ensure_running(self) -> str | None:
        """None if the guard runs (restarted if need be), else why not."""
        if self.alive() and self._sock is not None:
            return None
        try:
            self.start()
        except GuardStartError as exc:
            return f"no thaw guard: {exc}"
        return None

    def _on_guard_socket(self) -> None:
        """The guard sends nothing after "ready": readable means it died."""
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return
        pid = self.pid
        code = self._proc.wait() if self._proc is not None else None
        self.close(quiet=True)
        reason = f"the thaw guard (pid {pid}) died ({_exit_text(code)})"
        log.error("%s; restarting it", reason)
        self._set_status("died", pid=pid, reason=reason)
        with contextlib.suppress(GuardStartError):
            self.start()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self, quiet: bool = False) -> None:
        """Orderly end (nothing frozen): closing the socket makes the guard exit."""
        if self._sock is not None:
            if self.loop is not None:
                self.loop.remove_reader(self._sock)
            self._sock.close()
            self._sock = None
            if not quiet:
                self._set_status("stopped")
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def _send(self, msg: dict[str, Any], fds: list[int] | None = None) -> None:
        if self._sock is None:
            return
        data = json.dumps(msg).encode()
        try:
            if fds:
                socket.send_fds(self._sock, [data], fds)
            else:
                self._sock.send(data)
        except OSError as exc:
            self.problems.append(f"thaw guard unreachable: {exc.strerror or exc}")

    def arm(self, fds: list[int], labels: list[str]) -> None:
        self.problems = []
        problem = self.ensure_running()
        if problem is not None:
            self.problems.append(problem)
            return
        if len(fds) > MAX_FDS:
            self.problems.append(f"thaw guard covers only the first {MAX_FDS} filesystems")
            fds, labels = fds[:MAX_FDS], labels[:MAX_FDS]
        msg = {"op": "arm", "bound": self.bound + GRACE, "labels": labels, "record": self.record}
        self._send(msg, fds)

    def freezing(self, index: int) -> None:
        self._send({"op": "freezing", "i": index})

    def frozen(self, index: int) -> None:
        self._send({"op": "frozen", "i": index})

    def not_frozen(self, index: int) -> None:
        self._send({"op": "not_frozen", "i": index})

    def thawed(self, index: int) -> None:
        self._send({"op": "thawed", "i": index})

    def disarm(self) -> None:
        self._send({"op": "disarm"})

    def foreign_owed(
        self, calls: list[tuple[ForeignHook, Call]], kind: str, env: dict[str, str],
        timeout: float, total: float,
    ) -> None:
        """The other agents' scripts owed ``kind`` (thaw/fail), in the order to run."""
        self._send_owed(bool(calls), foreign_message(calls, kind, env, timeout, total))

    def hooks_owed(
        self, hooks: list[hookrun.Hook], argument: str, env: dict[str, str],
        timeout: float, total: float,
    ) -> None:
        """Which hooks are owed ``argument`` (thaw/freezefail) right now: the
        guard runs them, in reverse, if the daemon dies before it does."""
        self._send_owed(bool(hooks), {
            "op": "hooks", "hooks": [[h.name, h.path] for h in hooks], "argument": argument,
            "env": env, "timeout": timeout, "total": total,
        })

    def _send_owed(self, owed: bool, msg: dict[str, Any]) -> None:
        """Tell the guard what is owed, starting it first if something is."""
        if owed and not self.alive():
            try:
                self.start()
            except OSError as exc:
                self.problems.append(f"cannot start the thaw guard: {exc.strerror or exc}")
                return
        if len(json.dumps(msg)) > MAX_MESSAGE // 2:
            # A huge mount list must not make the message too big to be read.
            env = msg["env"]
            msg["env"] = {k: v for k, v in env.items() if k != "HVGUEST_VSS_MOUNTS"}
        self._send(msg)


def foreign_message(
    calls: list[tuple[ForeignHook, Call]], kind: str, env: dict[str, str], timeout: float,
    total: float,
) -> dict[str, object]:
    """The guard's copy of what the other agents' scripts are owed (refused ones
    are owed nothing: they never run)."""
    return {
        "op": "foreign", "kind": kind, "env": env, "timeout": timeout, "total": total,
        "calls": [[h.label, c.path, list(c.args), c.interpreter, h.timeout, list(h.ok_codes)]
                  for h, c in calls if c.refused is None],
    }


def _exit_text(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"
