"""The other agents' freeze scripts under hvguest-vssd (real daemon, real scripts,
real loop filesystems): open-vm-tools, qemu-ga and Azure Backup conventions, and
the attacks a local user could try through them.

The scripts live under a private system root (``--os-etc-dir BASE/os/etc``);
each writes "<label> <arguments>" to BASE/hooks.log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_vss_daemon import E_FAIL, FREEZE, OK, THAW, _scenario
from test_vss_fixtures import Writer, thaw_path

pytestmark = [pytest.mark.root, pytest.mark.system]

NOBODY = 65534


def _log(base: str) -> list[str]:
    try:
        with open(os.path.join(base, "hooks.log")) as f:
            return [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        return []


def _wait_for_lines(base: str, n: int, seconds: float = 20) -> list[str]:
    deadline = time.monotonic() + seconds
    while len(_log(base)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return _log(base)


def _script(base: str, rel: str, label: str, extra: str = "", mode: int = 0o755) -> str:
    path = os.path.join(base, "os", rel.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\necho "{label} $*" >> {os.path.join(base, "hooks.log")}\n{extra}\n')
    os.chmod(path, mode)
    return path


def _own_hook(base: str) -> dict[str, str]:
    log = os.path.join(base, "hooks.log")
    return {"10-own": f'#!/bin/sh\necho "own $1" >> {log}\n'}


def _azure(base: str, **doc: object) -> str:
    path = os.path.join(base, "os", "etc", "azure", "VMSnapshotPluginConfig.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"pluginName": "ScriptRunner", **doc}, f)
    os.chmod(path, 0o600)
    return path


def _run(tmp_path, body, config: str = "", **kw):  # type: ignore[no-untyped-def]
    base = str(tmp_path)
    os.makedirs(os.path.join(base, "os", "etc"), exist_ok=True)
    return _scenario(tmp_path, body, n=1, hooks=_own_hook(base), config=config,
                     args=["--os-etc-dir", os.path.join(base, "os", "etc")], **kw)


def _cycle(loops, fss, d):  # type: ignore[no-untyped-def]
    frozen = d.op(FREEZE)[0]
    writer = Writer(os.path.join(fss[0].mountpoint, "f"))
    blocked = not writer.done(0.5)
    thawed = d.op(THAW)[0] if frozen == OK else None
    finished = writer.done(10)
    time.sleep(0.5)  # thaw scripts run after the reply
    return frozen, blocked, thawed, finished, d.state(), d.output()


def _freeze_only(loops, fss, d):  # type: ignore[no-untyped-def]
    status = d.op(FREEZE)[0]
    unfrozen = [not thaw_path(fs.mountpoint) for fs in fss]
    time.sleep(0.3)
    return status, unfrozen, d.state(), d.output()


# -- open-vm-tools -------------------------------------------------------------------


def test_vmware_scripts_freeze_in_order_and_thaw_in_reverse(tmp_path):
    base = str(tmp_path)
    _script(base, "/usr/sbin/pre-freeze-script", "legacy-pre")
    _script(base, "/usr/sbin/post-thaw-script", "legacy-post")
    d = "/etc/vmware-tools/backupScripts.d"
    _script(base, f"{d}/20-b", "20-b")
    _script(base, f"{d}/10-a", "10-a")
    _script(base, f"{d}/a-lower", "a-lower")
    _script(base, f"{d}/B-upper", "B-upper")  # byte order, not a locale's: B before a
    _script(base, f"{d}/30-c~", "30-c~")  # open-vm-tools ignores no name
    os.makedirs(os.path.join(base, "os", d.lstrip("/"), "sub"))

    frozen, blocked, thawed, finished, state, out = _run(tmp_path, _cycle)
    assert frozen == OK and blocked and thawed == OK and finished, out
    assert _log(base) == [
        "own freeze",
        "legacy-pre freeze", "10-a freeze", "20-b freeze", "30-c~ freeze", "B-upper freeze",
        "a-lower freeze",
        "a-lower thaw", "B-upper thaw", "30-c~ thaw", "20-b thaw", "10-a thaw", "legacy-post thaw",
        "own thaw",
    ]
    hooks = state["details"]["last_freeze"]["hooks"]
    assert {h["hook"] for h in hooks} >= {"vmware:10-a", "vmware:pre-freeze-script", "10-own"}


def test_vmware_failing_freeze_script_aborts_thaws_and_sends_freezefail(tmp_path):
    base = str(tmp_path)
    d = "/etc/vmware-tools/backupScripts.d"
    _script(base, "/usr/sbin/post-thaw-script", "legacy-post")
    _script(base, f"{d}/10-a", "10-a")
    _script(base, f"{d}/20-bad", "20-bad", '[ "$1" = freeze ] && { echo db down >&2; exit 4; }')
    _script(base, f"{d}/30-never", "30-never")

    status, unfrozen, state, out = _run(tmp_path, _freeze_only)
    assert status == E_FAIL and all(unfrozen), out
    # The failing script gets nothing more; those before it get freezeFail, last first.
    assert _log(base) == [
        "own freeze", "10-a freeze", "20-bad freeze",
        "10-a freezeFail", "legacy-post freezeFail", "own freezefail",
    ]
    reason = state["details"]["last_freeze"]["reason"]
    assert "vmware:20-bad" in reason and "exited with 4" in reason and "db down" in reason


def test_vmware_failing_thaw_script_does_not_stop_the_others(tmp_path):
    base = str(tmp_path)
    d = "/etc/vmware-tools/backupScripts.d"
    _script(base, f"{d}/10-a", "10-a")
    _script(base, f"{d}/20-bad", "20-bad", '[ "$1" = thaw ] && exit 7; exit 0')
    _script(base, f"{d}/30-c", "30-c")

    frozen, blocked, thawed, finished, state, out = _run(tmp_path, _cycle)
    assert frozen == OK and thawed == OK and finished, out
    assert _log(base)[4:] == ["30-c thaw", "20-bad thaw", "10-a thaw", "own thaw"]
    assert "vmware:20-bad" in state["last_error"]["message"]
    assert "exited with 7" in state["last_error"]["message"]


# -- qemu-guest-agent ----------------------------------------------------------------

DISPATCHER = """#!/bin/sh
# stands for the stock dispatcher: it runs fsfreeze-hook.d
echo "dispatcher itself ran $*" >> {log}
"""


def test_qemu_dispatcher_scripts_run_in_name_order_both_ways(tmp_path):
    base = str(tmp_path)
    hook = os.path.join(base, "os", "etc", "qemu", "fsfreeze-hook")
    os.makedirs(os.path.dirname(hook))
    with open(hook, "w") as f:
        f.write(DISPATCHER.format(log=os.path.join(base, "hooks.log")))
    os.chmod(hook, 0o755)
    d = "/etc/qemu/fsfreeze-hook.d"
    _script(base, f"{d}/20-b", "20-b")
    _script(base, f"{d}/10-a", "10-a")
    _script(base, f"{d}/30-fails", "30-fails", "exit 3")  # logged; the dispatcher exits 0
    for leftover in ("20-b.dpkg-old", "20-b.rpmnew", "10-a~", "10-a.bak", ".hidden"):
        _script(base, f"{d}/{leftover}", leftover)
    _script(base, f"{d}/40-not-executable", "40-not-executable", mode=0o644)

    frozen, blocked, thawed, finished, state, out = _run(tmp_path, _cycle)
    assert frozen == OK and blocked and thawed == OK and finished, out
    assert _log(base) == [
        "own freeze", "10-a freeze", "20-b freeze", "30-fails freeze",
        "10-a thaw", "20-b thaw", "30-fails thaw", "own thaw",
    ]
    assert "qemu:30-fails freeze failed (its convention goes on)" in out


def test_qemu_own_hook_failing_fails_the_freeze(tmp_path):
    base = str(tmp_path)
    _script(base, "/etc/qemu-ga/fsfreeze-hook", "rhel-hook", '[ "$1" = freeze ] && exit 1')

    status, unfrozen, state, out = _run(tmp_path, _freeze_only)
    assert status == E_FAIL and all(unfrozen), out
    # qemu-ga runs nothing more after its hook failed.
    assert _log(base) == ["own freeze", "rhel-hook freeze", "own freezefail"]
    assert "qemu:qemu-ga/fsfreeze-hook" in state["details"]["last_freeze"]["reason"]


# -- Azure Backup --------------------------------------------------------------------


def test_azure_pre_and_post_scripts_with_parameters(tmp_path):
    base = str(tmp_path)
    _script(base, "/opt/app/pre.sh", "pre", "exit 2", mode=0o700)  # 2: a warning, success
    _script(base, "/opt/app/post.sh", "post", mode=0o700)
    _azure(base, preScriptLocation="/opt/app/pre.sh", postScriptLocation="/opt/app/post.sh",
           preScriptParams=["--db", "main one"], postScriptParams=["resume"],
           timeoutInSeconds=20, continueBackupOnFailure=False)

    frozen, blocked, thawed, finished, state, out = _run(tmp_path, _cycle)
    assert frozen == OK and blocked and thawed == OK and finished, out
    assert _log(base) == ["own freeze", "pre --db main one", "post resume", "own thaw"]


def test_azure_failing_pre_script_without_continue_aborts_and_runs_post(tmp_path):
    base = str(tmp_path)
    _script(base, "/etc/qemu/fsfreeze-hook", "qemu-hook")
    _script(base, "/opt/app/pre.sh", "pre", "exit 1", mode=0o700)
    _script(base, "/opt/app/post.sh", "post", mode=0o700)
    _azure(base, preScriptLocation="/opt/app/pre.sh", postScriptLocation="/opt/app/post.sh",
           continueBackupOnFailure=False)

    status, unfrozen, state, out = _run(tmp_path, _freeze_only)
    assert status == E_FAIL and all(unfrozen), out
    assert _log(base) == [
        "own freeze", "qemu-hook freeze", "pre ", "post ", "qemu-hook thaw", "own freezefail",
    ]


def test_azure_failing_pre_script_with_continue_goes_on(tmp_path):
    base = str(tmp_path)
    _script(base, "/opt/app/pre.sh", "pre", "exit 1", mode=0o700)
    _script(base, "/opt/app/post.sh", "post", mode=0o700)
    _azure(base, preScriptLocation="/opt/app/pre.sh", postScriptLocation="/opt/app/post.sh")

    frozen, blocked, thawed, finished, state, out = _run(tmp_path, _cycle)
    assert frozen == OK and thawed == OK, out
    assert _log(base) == ["own freeze", "pre ", "post ", "own thaw"]


# -- attacks -------------------------------------------------------------------------


def test_attack_world_writable_vmware_script_never_runs(tmp_path):
    base = str(tmp_path)
    d = "/etc/vmware-tools/backupScripts.d"
    _script(base, f"{d}/10-open", "10-open", mode=0o777)

    status, unfrozen, state, out = _run(tmp_path, _freeze_only)
    assert "10-open freeze" not in _log(base)
    # open-vm-tools fails the freeze when a script cannot run; so does hvguest.
    assert status == E_FAIL and all(unfrozen)
    assert "writable by group or others" in state["details"]["last_freeze"]["reason"]


def test_attack_symlink_to_a_user_file_never_runs(tmp_path):
    base = str(tmp_path)
    planted = os.path.join(base, "planted")
    with open(planted, "w") as f:
        f.write(f"#!/bin/sh\necho planted >> {os.path.join(base, 'hooks.log')}\n")
    os.chmod(planted, 0o755)
    os.chown(planted, NOBODY, NOBODY)
    for rel in ("etc/vmware-tools/backupScripts.d/10-link", "etc/qemu/fsfreeze-hook"):
        path = os.path.join(base, "os", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(planted, path)

    status, unfrozen, state, out = _run(tmp_path, _freeze_only)
    assert "planted" not in _log(base)
    assert status == E_FAIL and all(unfrozen)
    assert "a symbolic link" in out


def test_attack_azure_config_naming_a_user_writable_script(tmp_path):
    base = str(tmp_path)
    pre = _script(base, "/opt/app/pre.sh", "pre", mode=0o700)
    post = _script(base, "/opt/app/post.sh", "post", mode=0o700)
    os.chown(pre, NOBODY, NOBODY)  # the user may rewrite it at will
    os.chmod(post, 0o766)
    _azure(base, preScriptLocation="/opt/app/pre.sh", postScriptLocation="/opt/app/post.sh",
           continueBackupOnFailure=True)
    qemu_d = _script(base, "/etc/qemu/fsfreeze-hook.d/10-open", "qemu-open", mode=0o777)
    _script(base, "/etc/qemu/fsfreeze-hook", "# runs fsfreeze-hook.d")
    assert os.path.exists(qemu_d)

    frozen, blocked, thawed, finished, state, out = _run(tmp_path, _cycle)
    assert _log(base) == ["own freeze", "own thaw"]
    assert frozen == OK and thawed == OK  # both conventions go on without the script
    assert "preScriptLocation" in out and "owned by uid 65534" in out
    assert "qemu:10-open" in out and "refused" in out


def test_attack_user_writable_azure_config_is_not_read(tmp_path):
    base = str(tmp_path)
    _script(base, "/opt/app/pre.sh", "pre", mode=0o700)
    _script(base, "/opt/app/post.sh", "post", mode=0o700)
    config = _azure(base, preScriptLocation="/opt/app/pre.sh",
                    postScriptLocation="/opt/app/post.sh", continueBackupOnFailure=False)
    os.chmod(config, 0o666)

    frozen, blocked, thawed, finished, state, out = _run(tmp_path, _cycle)
    # Not read, so its continueBackupOnFailure neither: as the extension with a
    # config it cannot load, the backup goes on without the scripts.
    assert _log(base) == ["own freeze", "own thaw"]
    assert frozen == OK and thawed == OK
    assert "VMSnapshotPluginConfig.json writable by group or others" in out


# -- never twice; the guard; the plan --------------------------------------------------


def test_auto_skips_a_convention_whose_agent_runs(tmp_path):
    base = str(tmp_path)
    _script(base, "/etc/vmware-tools/backupScripts.d/10-a", "10-a")
    _script(base, "/etc/qemu/fsfreeze-hook", "qemu-hook")

    def body(loops, fss, d):  # type: ignore[no-untyped-def]
        # The daemon's proc root (only our mounts) now shows a running vmtoolsd.
        fake = os.path.join(loops.base, "proc", "4242")
        os.makedirs(fake)
        with open(os.path.join(fake, "cmdline"), "wb") as f:
            f.write(b"/usr/bin/vmtoolsd\0-n\0vmsvc\0")
        return _cycle(loops, fss, d)

    frozen, blocked, thawed, finished, state, out = _run(tmp_path, body)
    assert frozen == OK and thawed == OK
    assert _log(base) == ["own freeze", "qemu-hook freeze", "qemu-hook thaw", "own thaw"]
    assert "vmware freeze scripts not run: vmtoolsd runs" in out


def test_sigkill_after_freeze_guard_runs_the_foreign_thaws(tmp_path):
    base = str(tmp_path)
    _script(base, "/etc/vmware-tools/backupScripts.d/10-a", "10-a")
    _script(base, "/etc/vmware-tools/backupScripts.d/20-b", "20-b")

    def body(loops, fss, d):  # type: ignore[no-untyped-def]
        assert d.op(FREEZE)[0] == OK
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        return _wait_for_lines(base, 6), d.output()

    log, out = _run(tmp_path, body, as_installed=True)
    assert log == ["own freeze", "10-a freeze", "20-b freeze",
                   "20-b thaw", "10-a thaw", "own thaw"], out
    assert "thaw guard: ran hook vmware:20-b thaw" in out


def test_plan_lists_every_hook_in_order_with_its_convention(tmp_path):
    base = str(tmp_path)
    _script(base, "/etc/vmware-tools/backupScripts.d/10-a", "10-a")
    _script(base, "/etc/qemu/fsfreeze-hook", "qemu-hook")
    _script(base, "/opt/app/pre.sh", "pre", mode=0o700)
    _script(base, "/opt/app/post.sh", "post", mode=0o700)
    _azure(base, preScriptLocation="/opt/app/pre.sh", postScriptLocation="/opt/app/post.sh",
           preScriptParams=["x"])
    etc = os.path.join(base, "etc")
    os.makedirs(os.path.join(etc, "vss.d"))
    own = os.path.join(etc, "vss.d", "10-own")
    with open(own, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(own, 0o755)
    proc = os.path.join(base, "proc")
    os.makedirs(os.path.join(proc, "self"))
    open(os.path.join(proc, "self", "mountinfo"), "w").close()
    out = subprocess.run(
        [sys.executable, "-m", "hvguest.cli.main", "vss", "plan", "--proc-root", proc,
         "--etc-dir", etc, "--lib-dir", os.path.join(base, "lib"),
         "--os-etc-dir", os.path.join(base, "os", "etc")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split(None, 2) for line in out.stdout.splitlines()
            if line.startswith("  freeze") or line.startswith("  thaw")]
    assert [(p, c) for p, c, _ in rows] == [
        ("freeze", "hvguest"), ("freeze", "vmware"), ("freeze", "qemu"), ("freeze", "azure"),
        ("thaw", "azure"), ("thaw", "qemu"), ("thaw", "vmware"), ("thaw", "hvguest"),
    ]
    assert rows[3][2].startswith("sh ") and rows[3][2].endswith("pre.sh x")
