"""Finding the other agents' freeze scripts: config values, Azure's JSON, which
agents run, and the order of the runner's owed calls (no freeze, no daemon)."""

from __future__ import annotations

import json
import os

import pytest

from hvguest.config import load_config_text
from hvguest.errors import ConfigError
from hvguest.paths import Paths
from hvguest.vss.foreign import discover_foreign, running_agents
from hvguest.vss.foreign_run import ForeignRunner
from hvguest.vss.settings import check_setting

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the scripts must be root's")


def _paths(tmp_path) -> Paths:  # type: ignore[no-untyped-def]
    os.makedirs(tmp_path / "os" / "etc", exist_ok=True)
    os.makedirs(tmp_path / "proc", exist_ok=True)
    return Paths(os_etc=str(tmp_path / "os" / "etc"), proc=str(tmp_path / "proc"))


def _file(path, text="#!/bin/sh\n", mode=0o755):  # type: ignore[no-untyped-def]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("auto", None), ("none", None), ("[vmware, azure]", None),
        ("vmware", "expected 'auto', 'none' or a list"),
        ("[vmware, vmware]", "listed twice"),
        ("[hyperv]", "unknown convention 'hyperv'"),
    ],
)
def test_setting_values(text, error):  # type: ignore[no-untyped-def]
    yaml = f"vss:\n  foreign_hooks: {text}\n"
    if error is None:
        load_config_text(yaml, "hvguest.yaml")
        return
    with pytest.raises(ConfigError, match=error) as info:
        load_config_text(yaml, "hvguest.yaml")
    assert "hvguest.yaml:2: vss.foreign_hooks" in str(info.value)


def test_check_setting_refuses_other_types():
    assert check_setting(3) is not None


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ("{", "not valid JSON"),
        ("[]", "must hold a JSON object"),
        (json.dumps({"postScriptLocation": "/s/post"}), "preScriptLocation must be an absolute"),
        (json.dumps({"preScriptLocation": "s/pre", "postScriptLocation": "/s/post"}),
         "preScriptLocation must be an absolute"),
        (json.dumps({"preScriptLocation": "/s/pre", "postScriptLocation": "/s/post",
                     "preScriptParams": "x"}), "preScriptParams must be a list"),
        (json.dumps({"preScriptLocation": "/s/pre", "postScriptLocation": "/s/post",
                     "preScriptParams": [{"a": 1}]}), "preScriptParams must be a list"),
        (json.dumps({"preScriptLocation": "/s/pre", "postScriptLocation": "/s/post",
                     "timeoutInSeconds": -1}), "timeoutInSeconds must be a positive"),
        (json.dumps({"preScriptLocation": "/s/pre", "postScriptLocation": "/s/post",
                     "continueBackupOnFailure": "no"}), "continueBackupOnFailure must be"),
        (json.dumps({"preScriptLocation": "/s/missing", "postScriptLocation": "/s/post"}),
         "does not exist"),
        (json.dumps({"preScriptLocation": "/s/open", "postScriptLocation": "/s/post"}),
         "Azure Backup wants 0700"),
    ],
)
def test_azure_config_errors_refuse_both_scripts(tmp_path, doc, error):  # type: ignore[no-untyped-def]
    paths = _paths(tmp_path)
    for name, mode in (("pre", 0o700), ("post", 0o700), ("open", 0o750)):
        _file(str(tmp_path / "os" / "s" / name), mode=mode)
    _file(str(tmp_path / "os" / "etc" / "azure" / "VMSnapshotPluginConfig.json"), doc, 0o600)
    plan = discover_foreign(paths, ["azure"])
    (hook,) = plan.hooks
    assert hook.freeze is not None and hook.freeze.refused is not None
    assert error in hook.freeze.refused
    assert hook.thaw is None and hook.fail is None
    assert any(error in note for note in plan.notes)


def test_azure_timeout_is_capped_and_parameters_kept(tmp_path):  # type: ignore[no-untyped-def]
    paths = _paths(tmp_path)
    _file(str(tmp_path / "os" / "s" / "pre"), mode=0o700)
    _file(str(tmp_path / "os" / "s" / "post"), mode=0o700)
    _file(str(tmp_path / "os" / "etc" / "azure" / "VMSnapshotPluginConfig.json"), json.dumps({
        "preScriptLocation": "/s/pre", "postScriptLocation": "/s/../s/post",
        "preScriptParams": ["a b", 3], "timeoutInSeconds": 3600,
    }), 0o600)
    (hook,) = discover_foreign(paths, "auto").hooks
    assert hook.freeze is not None and hook.freeze.args == ("a b", "3")
    assert hook.thaw is not None and hook.thaw.path == str(tmp_path / "os" / "s" / "post")
    assert hook.timeout == 60.0 and hook.aborts is False and hook.ok_codes == (0, 2)


def test_running_agents_from_proc(tmp_path):  # type: ignore[no-untyped-def]
    paths = _paths(tmp_path)
    for pid, argv in (("10", b"/usr/bin/vmtoolsd\0"), ("11", b"python3\0-u\0/usr/sbin/waagent\0"),
                      ("12", b"/usr/bin/vim\0qemu-ga\0"), ("self", b"qemu-ga\0")):
        os.makedirs(tmp_path / "proc" / pid)
        (tmp_path / "proc" / pid / "cmdline").write_bytes(argv)
    assert running_agents(paths) == {"vmware", "azure"}  # an editor of qemu-ga is not qemu-ga
    os.makedirs(tmp_path / "proc" / "13")
    (tmp_path / "proc" / "13" / "cmdline").write_bytes(b"qemu-ga\0")
    assert running_agents(paths) == {"vmware", "azure", "qemu"}
    os.chown(tmp_path / "proc" / "13", 65534, 65534)  # a user's process named qemu-ga
    assert running_agents(paths) == {"vmware", "azure"}


def test_none_and_explicit_list(tmp_path):  # type: ignore[no-untyped-def]
    paths = _paths(tmp_path)
    _file(str(tmp_path / "os" / "etc" / "vmware-tools" / "backupScripts.d" / "10-a"))
    _file(str(tmp_path / "os" / "etc" / "qemu" / "fsfreeze-hook"))
    os.makedirs(tmp_path / "proc" / "7")
    (tmp_path / "proc" / "7" / "cmdline").write_bytes(b"/usr/sbin/qemu-ga\0")
    assert discover_foreign(paths, "none").hooks == []
    auto = discover_foreign(paths, "auto")
    assert [h.convention for h in auto.hooks] == ["vmware"]
    assert auto.skipped == [("qemu", "qemu-ga runs, and runs these scripts itself")]
    forced = discover_foreign(paths, ["qemu"])
    assert [h.convention for h in forced.hooks] == ["qemu"]
    assert "although qemu-ga runs too" in forced.notes[0]


def test_owed_order_groups_last_first_qemu_forwards(tmp_path):  # type: ignore[no-untyped-def]
    paths = _paths(tmp_path)
    etc = tmp_path / "os" / "etc"
    for name in ("10-a", "20-b"):
        _file(str(etc / "vmware-tools" / "backupScripts.d" / name))
        _file(str(etc / "qemu" / "fsfreeze-hook.d" / name))
    _file(str(etc / "qemu" / "fsfreeze-hook"), "#!/bin/sh\n# runs fsfreeze-hook.d\n")
    plan = discover_foreign(paths, "auto")
    runner = ForeignRunner(plan, timeout=1, total_timeout=1)
    runner.reached = [(g, h) for g, group in enumerate(plan.groups) for h in group.hooks]
    shown = [(h.label, c.args[0]) for h, c in runner.owed("thaw")]
    assert shown == [("qemu:10-a", "thaw"), ("qemu:20-b", "thaw"),
                     ("vmware:20-b", "thaw"), ("vmware:10-a", "thaw")]
    assert [c.args[0] for _, c in runner.owed("fail")] == ["thaw", "thaw",
                                                           "freezeFail", "freezeFail"]
