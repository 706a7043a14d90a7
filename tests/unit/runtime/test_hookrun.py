"""hvguest.hookrun: what runs (through the checked descriptor), with what, and for
how long; the directory checks; the budgets the configuration allows."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from hvguest import hookrun
from hvguest.config import load_config_text
from hvguest.daemon import Runtime
from hvguest.errors import ConfigError
from hvguest.heartbeat.settings import HeartbeatSettings
from hvguest.vss.settings import VssSettings

ENV: dict[str, str] = {}


@pytest.fixture
def hooks(tmp_path: os.PathLike[str]) -> Iterator[str]:
    directory = os.path.join(str(tmp_path), "hooks.d")
    os.makedirs(directory, mode=0o755)
    yield directory


def _hook(directory: str, name: str, text: str) -> hookrun.Hook:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return hookrun.Hook(name, path)


def _run(hook: hookrun.Hook, *args: str, timeout: float = 10) -> hookrun.Outcome:
    return hookrun.run(hook, list(args), timeout=timeout, env=ENV, owner_uid=os.getuid())


def test_shell_script_runs_from_the_checked_descriptor(hooks: str) -> None:
    hook = _hook(hooks, "10-sh", '#!/bin/sh\necho "$0|$1|$HVGUEST_HOOK"\n')
    out = _run(hook, "freeze")
    assert out.ok, out.error
    zero, arg, path = out.output.split("|")
    assert zero.startswith("/proc/self/fd/") and arg == "freeze" and path == hook.path


def test_python_script_and_binary_hooks_run(hooks: str) -> None:
    script = _hook(hooks, "10-py", f"#!{sys.executable} -I\nimport sys; print(sys.argv[1])\n")
    assert _run(script, "thaw").output == "thaw"
    binary = os.path.join(hooks, "20-bin")
    shutil.copy("/bin/echo", binary)
    os.chmod(binary, 0o755)
    out = _run(hookrun.Hook("20-bin", binary), "freezefail")
    assert out.ok and out.output == "freezefail"


def test_environment_is_the_runner_s_own(
    hooks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("LEAKED", "x")
    hook = _hook(hooks, "10-env", "#!/bin/sh\nenv | sort\n")
    out = hookrun.run(hook, [], timeout=10, env={"EXTRA": "1"}, owner_uid=os.getuid())
    names = {line.split("=", 1)[0] for line in out.output.splitlines()}
    assert {"PATH", "LANG", "EXTRA", "HVGUEST_HOOK"} <= names
    assert "LEAKED" not in names and "NOTIFY_SOCKET" not in names


def test_failure_signal_and_output_tail(hooks: str) -> None:
    out = _run(_hook(hooks, "10-fail", "#!/bin/sh\necho why >&2\nexit 3\n"))
    assert out.returncode == 3 and out.error == "exited with 3" and out.output == "why"
    out = _run(_hook(hooks, "20-kill", "#!/bin/sh\nkill -TERM $$\n"))
    assert out.error == "killed by signal 15"
    chatty = _hook(hooks, "30-chatty", "#!/bin/sh\nhead -c 1000000 /dev/zero | tr '\\0' a\n")
    out = _run(chatty)
    assert out.ok and 0 < len(out.output) <= hookrun.OUTPUT_LIMIT


def test_hook_that_closes_its_output_still_times_out(hooks: str) -> None:
    hook = _hook(hooks, "10-quiet", "#!/bin/sh\nexec >&- 2>&-\nsleep 30\n")
    out = _run(hook, timeout=0.5)
    assert out.timed_out and out.returncode is None and "timed out after 0.5 s" in out.error


def test_symlinked_directories_are_followed_only_through_safe_places(
    tmp_path: os.PathLike[str], hooks: str
) -> None:
    base = str(tmp_path)
    os.symlink(hooks, os.path.join(base, "alias.d"))  # like /lib -> usr/lib
    assert hookrun.safe_directory(os.path.join(base, "alias.d")) == hooks
    open_dir = os.path.join(base, "open")
    os.makedirs(os.path.join(open_dir, "inner"))
    os.chmod(open_dir, 0o777)
    os.symlink(os.path.join(open_dir, "inner"), os.path.join(base, "via-open"))
    with pytest.raises(hookrun.Unsafe, match="writable by group or others"):
        hookrun.safe_directory(os.path.join(base, "via-open"))


def test_refusal_is_reported_not_raised(hooks: str) -> None:
    hook = _hook(hooks, "10-open", "#!/bin/sh\n")
    os.chmod(hook.path, 0o757)
    out = _run(hook)
    assert out.error.startswith("refused: writable by group or others")


def test_budget_leaves_room_for_the_kill() -> None:
    assert hookrun.budget(5, 100) == 5
    assert hookrun.budget(5, 4) == 4 - 2 * hookrun.GRACE
    assert hookrun.budget(5, 1) == 0


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        ("vss:\n  hook_phase_timeout: 61\n", VssSettings),
        ("vss:\n  hook_timeout: 600\n", VssSettings),
        ("heartbeat:\n  shutdown_total_timeout: 111\n", HeartbeatSettings),
        ("heartbeat:\n  shutdown_hook_timeout: 3600\n", HeartbeatSettings),
    ],
)
def test_config_refuses_budgets_the_units_cannot_honour(text: str, cls: type) -> None:
    with pytest.raises(ConfigError):
        load_config_text(text, "h.yaml").get(cls)


def test_keepalive_pings_while_blocked_and_stops_at_its_bound(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = os.path.join(str(tmp_path), "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "400000")
        runtime = Runtime("test")
        try:
            with runtime.keepalive(0.5):
                time.sleep(1.5)  # the blocking work itself, not a wait for state
            pings = []
            while True:
                try:
                    pings.append(sock.recv(64))
                except BlockingIOError:
                    break
        finally:
            runtime.close()
    # The bound: 0.5 s of pings every 0.1 s, then none (1.5 s would give ~15).
    assert all(p == b"WATCHDOG=1" for p in pings)
    assert 2 <= len(pings) <= 7
