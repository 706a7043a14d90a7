"""The one way hvguest runs another program (network tools, chronyc, systemctl)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

EXIT_TIMED_OUT = 124
EXIT_NOT_FOUND = 127
# Variables a child must not inherit: systemctl would report its own status on our
# notification socket.
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass(frozen=True, slots=True)
class CommandResult:
    """``code``: the exit status, 124 when killed at the time limit, 127 when the
    program could not be started; ``output``: stdout then stderr, stripped."""

    code: int
    output: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0


Runner = Callable[[Sequence[str], float], CommandResult]


def run_command(
    argv: Sequence[str], timeout: float, *, env: Mapping[str, str] | None = None
) -> CommandResult:
    """Run ``argv`` without a shell, with no stdin, for at most ``timeout`` seconds.

    The program runs in a session of its own: at the time limit the whole process
    group is killed, so a helper it started cannot keep the output pipe (and us)
    waiting.
    """
    base = os.environ if env is None else env
    child_env = {k: v for k, v in base.items() if k not in _NOT_INHERITED}
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=child_env,
        )
    except OSError as exc:
        return CommandResult(EXIT_NOT_FOUND, f"{argv[0] if argv else '?'}: {exc.strerror}")
    try:
        out, err = proc.communicate(timeout=max(0.1, timeout))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = b"", b""
        with contextlib.suppress(subprocess.TimeoutExpired):
            out, err = proc.communicate(timeout=1.0)
        text = _text(out, err)
        note = f"timed out after {timeout:g} s"
        return CommandResult(EXIT_TIMED_OUT, f"{text}\n{note}" if text else note, True)
    return CommandResult(proc.returncode, _text(out, err))


def _text(out: bytes | None, err: bytes | None) -> str:
    joined = (out or b"") + (err or b"")
    return joined.decode("utf-8", "replace").strip()
