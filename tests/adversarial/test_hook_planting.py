"""Local-user attacks on the root-run hooks (VSS freeze/thaw and pre-shutdown).

Each attack is run against every entry point: ``hvguest.vss.hooks`` (what
hvguest-vssd runs), the other agents' conventions it runs too
(``hvguest.vss.foreign``: open-vm-tools' backupScripts.d, qemu-ga's
fsfreeze-hook.d) and ``hvguest.shutdown.hooks.run_hooks`` (what
``hvguestctl shutdown-hooks run`` runs). A hook proves it ran by appending to a
marker file; an attack succeeds when the attacker's code runs as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest

from hvguest.paths import Paths
from hvguest.shutdown import hooks as shutdown
from hvguest.vss.foreign import discover_foreign
from hvguest.vss.foreign_run import ForeignRunner
from hvguest.vss.hooks import HookRunner, discover

pytestmark = [pytest.mark.root]

NOBODY = 65534

Runner = Callable[[str], None]


def _script(path: str, marker: str, label: str, extra: str = "") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\necho "{label} $1" >> {marker}\n{extra}\n')
    os.chmod(path, 0o755)


def _ran(marker: str) -> list[str]:
    try:
        with open(marker) as f:
            return [line.split()[0] for line in f]
    except FileNotFoundError:
        return []


def _run_vss(etc: str) -> None:
    found = discover([os.path.join(etc, "vss.d")])
    runner = HookRunner(found.hooks, timeout=5)
    runner.freeze()
    runner.thaw()


def _run_shutdown(etc: str) -> None:
    shutdown.run_hooks(Paths(etc=etc, run=etc + "-run"), hook_timeout=5, total_timeout=20)


def _run_foreign(etc: str, convention: str) -> None:
    """Another agent's scripts as hvguest-vssd runs them (``etc`` plays /etc)."""
    proc = etc + "-proc"  # no agent runs
    os.makedirs(proc, exist_ok=True)
    plan = discover_foreign(Paths(os_etc=etc, proc=proc), [convention])
    runner = ForeignRunner(plan, timeout=5, total_timeout=20)
    if runner.freeze() is None:
        runner.thaw()
    else:
        runner.freeze_failed("attack test")


def _run_qemu(etc: str) -> None:
    # The stock dispatcher, root's: hvguest then runs fsfreeze-hook.d itself.
    _script(os.path.join(etc, "qemu", "fsfreeze-hook"), os.devnull, "runs fsfreeze-hook.d")
    _run_foreign(etc, "qemu")


RUNNERS = {
    "vss": ("vss.d", _run_vss),
    "shutdown": ("shutdown.d", _run_shutdown),
    "vmware": ("vmware-tools/backupScripts.d", lambda etc: _run_foreign(etc, "vmware")),
    "qemu": ("qemu/fsfreeze-hook.d", _run_qemu),
}


@pytest.fixture(params=sorted(RUNNERS))
def kind(request: pytest.FixtureRequest) -> Iterator[tuple[str, Runner]]:
    yield RUNNERS[request.param]


@pytest.fixture
def base() -> Iterator[str]:
    # Root-owned 0755 directly below the (root-owned, sticky) temp root, so that
    # uid 65534 can reach what the attacks need (pytest's own temp dirs are 0700).
    path = tempfile.mkdtemp(prefix="hvguest-hooks-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_nobody(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a child that has really dropped to uid/gid 65534."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the attacker step itself failed"


def test_symlinked_hook_is_refused(base: str, kind: tuple[str, Runner]) -> None:
    subdir, run = kind
    etc = os.path.join(base, "etc")
    marker = os.path.join(base, "ran")
    # A root-owned executable anywhere on the system, reached through a link.
    target = os.path.join(base, "elsewhere", "tool")
    _script(target, marker, "linked")
    os.makedirs(os.path.join(etc, subdir))
    os.symlink(target, os.path.join(etc, subdir, "10-link"))
    run(etc)
    assert _ran(marker) == []


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_hook_in_group_or_world_writable_directory_is_refused(
    base: str, kind: tuple[str, Runner], mode: int
) -> None:
    subdir, run = kind
    etc = os.path.join(base, "etc")
    marker = os.path.join(base, "ran")
    _script(os.path.join(etc, subdir, "10-hook"), marker, "hook")
    os.chmod(os.path.join(etc, subdir), mode)
    run(etc)
    assert _ran(marker) == []


def test_hook_below_a_directory_writable_by_a_local_user_is_refused(
    base: str, kind: tuple[str, Runner]
) -> None:
    """The hook and its directory are root's, but their parent belongs to uid 65534:
    that user swaps the whole directory for a link to root-owned programs of their
    choice (here a stand-in for /usr/sbin), which then run as root."""
    subdir, run = kind
    owned = os.path.join(base, "owned")
    os.makedirs(owned)
    os.chown(owned, NOBODY, NOBODY)
    etc = os.path.join(owned, "etc")
    marker = os.path.join(base, "ran")
    _script(os.path.join(etc, subdir, "10-hook"), marker, "legit")
    _script(os.path.join(base, "sbin", subdir, "10-hook"), marker, "attacker")

    def swap() -> None:
        os.rename(etc, os.path.join(owned, "etc.away"))
        os.symlink(os.path.join(base, "sbin"), etc)

    _as_nobody(swap)
    assert os.path.islink(etc)  # the attacker step really happened, as uid 65534
    run(etc)
    assert _ran(marker) == []


def test_file_swapped_between_check_and_exec_does_not_run(
    base: str, kind: tuple[str, Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file that passed the checks must be the file that runs: a swap after the
    check (here made deterministic: just before the process is spawned) to a file
    that would have been refused (a link to a world-writable script) is not run."""
    subdir, run = kind
    etc = os.path.join(base, "etc")
    marker = os.path.join(base, "ran")
    hook = os.path.join(etc, subdir, "10-hook")
    _script(hook, marker, "checked")
    planted = os.path.join(base, "planted")
    _script(planted, marker, "planted")
    os.chmod(planted, 0o777)
    real_popen = subprocess.Popen
    swapped: list[str] = []

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        if not swapped:
            os.rename(hook, hook + ".orig")
            os.symlink(planted, hook)
            swapped.append(hook)
        return real_popen(*args, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(subprocess, "Popen", popen)
    run(etc)
    assert swapped, "the swap never happened: the attack was not tried"
    assert "planted" not in _ran(marker)
    assert _ran(marker)[:1] == ["checked"]


def test_hook_that_daemonizes_keeping_stdout_open_does_not_hang_the_runner(
    base: str, kind: tuple[str, Runner]
) -> None:
    """A hook starts a child in its own session (out of reach of the process-group
    kill) that keeps the output pipe open for a long time, then exits 0."""
    subdir, run = kind
    etc = os.path.join(base, "etc")
    marker = os.path.join(base, "ran")
    pidfile = os.path.join(base, "straggler.pid")
    _script(
        os.path.join(etc, subdir, "10-daemonize"),
        marker,
        "daemonize",
        f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 120' &\n"
        f"while [ ! -s {pidfile} ]; do sleep 0.05; done",
    )
    done = threading.Event()
    thread = threading.Thread(target=lambda: (run(etc), done.set()), daemon=True)
    thread.start()
    try:
        # Liveness, not speed: the runner's own bounds are a few seconds; the
        # straggler holds the pipe for two minutes.
        finished = done.wait(60)
    finally:
        with open(pidfile) as f:
            straggler = int(f.read())
        try:
            os.kill(straggler, 9)
        except ProcessLookupError:
            pass
    assert finished, "the runner waited for the daemonized child's output"
    assert _ran(marker)[:1] == ["daemonize"]


def test_link_planted_by_a_user_in_a_sticky_directory_is_not_followed(
    base: str, kind: tuple[str, Runner]
) -> None:
    """/tmp-like directories are accepted above a hook directory (nobody can move
    root's entries there), but a link a user owns there can be re-pointed at will."""
    subdir, run = kind
    sticky = os.path.join(base, "tmp")
    os.makedirs(sticky)
    os.chmod(sticky, 0o1777)
    marker = os.path.join(base, "ran")
    _script(os.path.join(base, "sbin", subdir, "10-hook"), marker, "attacker")
    link = os.path.join(sticky, "etc")
    _as_nobody(lambda: os.symlink(os.path.join(base, "sbin"), link))
    assert os.lstat(link).st_uid == NOBODY
    run(link)
    assert _ran(marker) == []
