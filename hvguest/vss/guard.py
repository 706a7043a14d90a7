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
(stderr only, which is the journal's socket under systemd). Hooks the daemon
still owed a ``thaw``/``freezefail`` when it died get it from here, through the
daemon's own ``HookRunner``. The daemon's end of the socket: ``guard_client``.
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
import sys
import time
from collections.abc import Callable
from typing import Any

from hvguest import hookrun
from hvguest.vss.foreign import Call
from hvguest.vss.foreign_run import run_call
from hvguest.vss.freeze import FITHAW
from hvguest.vss.hooks import HookRunner

log = logging.getLogger(__name__)

# The protocol both ends share (the daemon's end: hvguest.vss.guard_client).
GRACE = 2.0  # seconds after the auto-thaw bound before the guard acts
STOP_GRACE = 3.0  # after SIGTERM, time for the daemon to thaw and disarm first
MAX_FDS = 253  # SCM_MAX_FD
MAX_MESSAGE = 65536  # what Guard.run reads of one message
READY = b'{"op": "ready"}'


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
        self.foreign: dict[str, Any] | None = None  # the last "foreign" message, if any owed

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
        if op == "foreign":
            calls = msg.get("calls")
            self.foreign = msg if isinstance(calls, list) and calls else None
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

    def owes(self) -> bool:
        return self.owed is not None or self.foreign is not None

    def deliver_foreign(self, why: str) -> None:
        """The other agents' scripts the daemon still owed, in the order it sent
        (they come before hvguest's own thaw hooks)."""
        owed, self.foreign = self.foreign, None
        if owed is None:
            return
        try:
            calls = [
                (str(label), Call(str(path), tuple(str(a) for a in args),
                                  None if interp is None else str(interp)),
                 None if limit is None else float(limit), tuple(int(c) for c in codes))
                for label, path, args, interp, limit, codes in owed["calls"]
            ]
            env = {str(k): str(v) for k, v in dict(owed.get("env") or {}).items()}
            timeout, total = float(owed["timeout"]), float(owed["total"])
        except (KeyError, TypeError, ValueError):
            log.error("thaw guard: unreadable list of foreign scripts; not run")
            return
        if owed.get("kind") != "thaw":
            env.setdefault("HVGUEST_VSS_FAILURE", why)
        deadline = self.clock() + total
        for label, call, limit, codes in calls:
            budget = hookrun.budget(limit or timeout, deadline - self.clock())
            if budget <= 0:
                log.error("thaw guard: %s %s not run (%s): no time left", label, call.show(), why)
                continue
            run = run_call(label, call, timeout=budget, env=env, ok_codes=codes)
            level = logging.ERROR if run.error else logging.WARNING
            log.log(level, "thaw guard: ran hook %s %s (%s): %s", label, run.argument, why,
                    run.error or "ok")

    def deliver_hooks(self, why: str) -> None:
        """Run the hooks the daemon still owed a thaw/freezefail (after thawing:
        hooks never run while anything of ours is frozen)."""
        self.deliver_foreign(why)
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
        # The daemon's own runner, so the hooks get what the daemon would give them.
        runner = HookRunner(hooks, timeout=timeout, total_timeout=total, env=env,
                            clock=self.clock)
        runner.started = list(hooks)
        extra = {} if argument == "thaw" else {"HVGUEST_VSS_FAILURE":
                                               env.get("HVGUEST_VSS_FAILURE", why)}
        runner.unwind(argument, extra)
        for run in runner.runs:
            if not run.started:
                log.error("thaw guard: hook %s %s not run (%s): %s", run.hook, argument, why,
                          run.error)
                continue
            level = logging.ERROR if run.error else logging.WARNING
            log.log(level, "thaw guard: ran hook %s %s (%s): %s", run.hook, argument, why,
                    run.error or "ok")

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
                    if not self.states and not self.owes():
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
                if not self.owes():
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
