"""The thaw guard: a small process that thaws if hvguest-vssd dies while frozen.

The kernel does not thaw filesystems whose freezer died, and writers on them hang
in uninterruptible sleep. So before the first FIFREEZE the daemon hands the guard
an open directory fd of every filesystem it is about to freeze (SCM_RIGHTS over a
SOCK_SEQPACKET socketpair) and reports each step: "freezing i" before the ioctl,
"frozen i" or "not_frozen i" after it, "thawed i" after FITHAW, "disarm" at the
end. The guard thaws, in reverse order, every filesystem reported "freezing" or
"frozen" and not yet "thawed" when:

* the socket closes without a "disarm" (the daemon died, even by SIGKILL), or
* the deadline passes (auto-thaw bound plus a grace period: the daemon's own
  timer normally acts first; this covers a daemon stuck in a system call).

It never touches a filesystem reported "not_frozen" (e.g. frozen by another
tool: EBUSY), so it never thaws someone else's freeze. Holding fds rather than
paths means a later mount on the same path cannot be thawed by mistake.

The guard imports everything at start and writes nothing to disk while armed
(stderr only, which is the journal's socket under systemd).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import hvguest
from hvguest import hookrun
from hvguest.vss.freeze import FITHAW

log = logging.getLogger(__name__)

GRACE = 2.0  # seconds after the auto-thaw bound before the guard acts
STOP_GRACE = 3.0  # after SIGTERM, time for the daemon to thaw and disarm first
MAX_FDS = 253  # SCM_MAX_FD
MAX_MESSAGE = 65536  # what Guard.run reads of one message
START_TIMEOUT = 10.0  # for the guard to import everything and say "ready"
READY = b'{"op": "ready"}'
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


# -- daemon side ---------------------------------------------------------------


class GuardClient:
    """The daemon's end: spawns the guard and reports each step to it.

    Implements ``FreezeObserver``. The guard counts as running only once it said
    "ready" (it imported everything it needs). Its start, failure and death are
    logged and kept in ``status``; with a ``loop``, a death is noticed at once (the
    socket closes) and the guard restarted; ``ensure_running()`` is asked before
    every freeze. A send that fails is logged (after thaw) but never blocks a freeze.
    """

    def __init__(
        self,
        bound: float,
        *,
        record: str | None = None,
        python: str = sys.executable,
        loop: ReaderLoop | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.bound = bound
        self.record = record
        self.python = python
        self.loop = loop
        self.on_change = on_change
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.problems: list[str] = []
        self.status: dict[str, Any] = {"state": "not started"}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _set_status(self, state: str, **fields: Any) -> None:
        self.status = {"state": state, "time": _utc_now(), **fields}
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

    def hooks_owed(
        self, hooks: list[hookrun.Hook], argument: str, env: dict[str, str],
        timeout: float, total: float,
    ) -> None:
        """Which hooks are owed ``argument`` (thaw/freezefail) right now: the
        guard runs them, in reverse, if the daemon dies before it does."""
        if hooks and not self.alive():
            try:
                self.start()
            except OSError as exc:
                self.problems.append(f"cannot start the thaw guard: {exc.strerror or exc}")
                return
        msg = {
            "op": "hooks", "hooks": [[h.name, h.path] for h in hooks], "argument": argument,
            "env": env, "timeout": timeout, "total": total,
        }
        if len(json.dumps(msg)) > MAX_MESSAGE // 2:
            # A huge mount list must not make the message too big to be read.
            msg["env"] = {k: v for k, v in env.items() if k != "HVGUEST_VSS_MOUNTS"}
        self._send(msg)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- guard side ------------------------------------------------------------------


class Guard:
    def __init__(self, sock: socket.socket, clock: Callable[[], float] = time.monotonic) -> None:
        self.sock = sock
        self.clock = clock
        self.fds: list[int] = []
        self.labels: list[str] = []
        self.states: list[str] = []
        self.deadline: float | None = None
        self.stopping_at: float | None = None
        self.record: str | None = None
        self.owed: dict[str, Any] | None = None  # the last "hooks" message, if any owed

    def armed_and_frozen(self) -> list[int]:
        return [i for i, s in enumerate(self.states) if s in ("freezing", "frozen")]

    def handle(self, msg: dict[str, Any], fds: list[int]) -> None:
        op = msg.get("op")
        if op == "arm":
            self.release()
            self.fds = fds
            self.labels = [str(x) for x in msg.get("labels", [])][: len(fds)]
            self.labels += [f"fd {fd}" for fd in fds[len(self.labels) :]]
            self.states = ["armed"] * len(fds)
            self.deadline = self.clock() + float(msg.get("bound", 60.0))
            record = msg.get("record")
            self.record = record if isinstance(record, str) else None
            return
        for fd in fds:  # fds only come with "arm"
            os.close(fd)
        if op == "hooks":
            hooks = msg.get("hooks")
            self.owed = msg if isinstance(hooks, list) and hooks else None
            return
        if op == "disarm":
            self.release()
            return
        index = msg.get("i")
        if (
            isinstance(index, int)
            and 0 <= index < len(self.states)
            and op in ("freezing", "frozen", "not_frozen", "thawed")
        ):
            self.states[index] = op

    def thaw_all(self, why: str) -> None:
        failed = False
        for i in reversed(self.armed_and_frozen()):
            try:
                fcntl.ioctl(self.fds[i], FITHAW, 0)
                log.warning("thaw guard: thawed %s (%s)", self.labels[i], why)
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    log.info("thaw guard: %s was not frozen any more", self.labels[i])
                else:
                    failed = True
                    log.error(
                        "thaw guard: cannot thaw %s: %s; run 'fsfreeze -u %s'",
                        self.labels[i],
                        os.strerror(exc.errno or 0),
                        self.labels[i],
                    )
            self.states[i] = "thawed"
        if not failed and self.record:
            # Nothing of ours is frozen any more: the emergency-thaw record is stale.
            with contextlib.suppress(OSError):
                os.unlink(self.record)
        self.release()

    def deliver_hooks(self, why: str) -> None:
        """Run the hooks the daemon still owed a thaw/freezefail (after thawing:
        hooks never run while anything of ours is frozen)."""
        owed, self.owed = self.owed, None
        if owed is None:
            return
        try:
            hooks = [hookrun.Hook(str(n), str(p)) for n, p in owed["hooks"]]
            argument = str(owed["argument"])
            env = {str(k): str(v) for k, v in dict(owed.get("env") or {}).items()}
            timeout, total = float(owed["timeout"]), float(owed["total"])
        except (KeyError, TypeError, ValueError):
            log.error("thaw guard: unreadable hook list; hooks not run")
            return
        env["HVGUEST_VSS_OPERATION"] = argument
        if argument != "thaw":
            env.setdefault("HVGUEST_VSS_FAILURE", why)
        deadline = self.clock() + total
        for hook in reversed(hooks):
            budget = hookrun.budget(timeout, deadline - self.clock())
            if budget <= 0:
                log.error("thaw guard: no time left to run hook %s %s", hook.name, argument)
                continue
            out = hookrun.run(hook, [argument], timeout=budget, env=env)
            level = logging.WARNING if out.ok else logging.ERROR
            log.log(level, "thaw guard: ran hook %s %s (%s): %s", hook.name, argument, why,
                    out.error or "ok")

    def release(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds, self.labels, self.states = [], [], []
        self.deadline = None

    def timeout(self) -> float | None:
        ends = [t for t in (self.deadline, self.stopping_at) if t is not None]
        if not ends:
            return None
        return max(0.0, min(ends) - self.clock())

    def run(self, wake_fd: int) -> int:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(wake_fd, select.POLLIN)
        while True:
            timeout = self.timeout()
            events = poller.poll(None if timeout is None else int(timeout * 1000) + 1)
            now = self.clock()
            for fd, _mask in events:
                if fd == wake_fd:
                    with contextlib.suppress(OSError):
                        os.read(wake_fd, 64)
                    if not self.states and self.owed is None:
                        return 0
                    if self.stopping_at is None:
                        self.stopping_at = now + STOP_GRACE
                    continue
                try:
                    data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, MAX_FDS)
                except OSError:
                    data, fds = b"", []
                if not data:
                    if self.armed_and_frozen():
                        self.thaw_all("hvguest-vssd went away while filesystems were frozen")
                    self.release()
                    self.deliver_hooks("hvguest-vssd went away")
                    return 0
                try:
                    msg = json.loads(data)
                except ValueError:
                    for extra in fds:
                        os.close(extra)
                    continue
                self.handle(msg, fds)
            if self.deadline is not None and now >= self.deadline:
                self.thaw_all("no thaw within the auto-thaw bound")
            if self.stopping_at is not None and now >= self.stopping_at:
                self.thaw_all("stopped while filesystems were frozen")
                if self.owed is None:
                    return 0
                # The daemon may still be running the thaw hooks: deliver only
                # if it goes away without finishing them.
                self.stopping_at = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hvguest-vss-guard", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="the socket shared with the daemon")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="hvguest-vss-guard[%(process)d] %(levelname)s %(message)s",
    )
    # Being chosen by the OOM killer would defeat the point.
    with contextlib.suppress(OSError):
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda s, f: os.write(wfd, b"x"))
    sock = socket.socket(fileno=args.fd)
    sock.send(READY)  # everything imported: the daemon may count on us
    return Guard(sock).run(rfd)


if __name__ == "__main__":
    sys.exit(main())
