"""What the host (or another process) wrote reaches the admin's terminal escaped.

Every text view of hvguestctl that shows host- or process-supplied strings, fed a name
or value with ESC, BEL, CR, newline, DEL, C1 and Unicode line separators: the output
holds none of them raw and has exactly the lines it would have for a benign value.
``--json`` keeps the exact value. Piping into ``head`` ends quietly.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest
import sysfs_builder
from hostile import HOSTILE, assert_inert

from hvguest.cli.main import main
from hvguest.log import setup_logging
from hvguest.paths import Paths
from hvguest.pool import PoolRegistry, PoolStore
from hvguest.text import printable

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()

T = "2026-01-02T03:04:05Z"


@pytest.fixture()
def machine(tmp_path: Any) -> Paths:
    paths = sysfs_builder.build(str(tmp_path / "m"), kernel="6.12")
    store = PoolStore(paths, POOLS)
    store.set(0, HOSTILE, HOSTILE, unsafe=True)
    store.set(0, "plain", "value")
    POOLS.close_all()
    return paths


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_printable_escapes_every_unsafe_character() -> None:
    assert printable("a\x1b[2Jb\x07\n\r\t\x7f\x85\x9b\u2028\u2029\u202e\ud800") == (
        "a\\x1b[2Jb\\x07\\n\\r\\t\\x7f\\x85\\x9b\\u2028\\u2029\\u202e\\ud800"
    )
    assert printable("plain text, ümlaut, 漢字 and C:\\path") == (
        "plain text, ümlaut, 漢字 and C:\\path"
    )


def test_kvp_list_and_get(capsys: pytest.CaptureFixture[str], machine: Paths) -> None:
    code, out, _ = run(capsys, "kvp", "list", "--pool", "0", "--pool-dir", machine.pool_dir)
    assert code == 0
    assert_inert(out, lines=2)
    assert out.splitlines()[0] == f"{printable(HOSTILE)}={printable(HOSTILE)}"
    code, out, _ = run(capsys, "kvp", "get", HOSTILE, "--pool-dir", machine.pool_dir)
    assert code == 0
    assert_inert(out, lines=1)
    code, _, err = run(capsys, "kvp", "get", HOSTILE + "x", "--pool-dir", machine.pool_dir)
    assert code == 1
    assert_inert(err, lines=1)


def test_kvp_list_json_is_exact(capsys: pytest.CaptureFixture[str], machine: Paths) -> None:
    code, out, _ = run(capsys, "kvp", "list", "--json", "--pool", "0",
                       "--pool-dir", machine.pool_dir)
    assert code == 0
    items = json.loads(out)["pools"]["0"]["items"]
    assert items[0] == {"key": HOSTILE, "value": HOSTILE}
    assert_inert(out)  # exact value, yet no raw ESC, C1, U+2028 or bidi control


def test_kvp_watch(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    from hvguest.cli.kvp import diff_items

    lines = diff_items(0, [("plain", "v")], [("plain", HOSTILE), (HOSTILE, HOSTILE)])
    assert len(lines) == 2
    for line in lines:
        assert_inert(line, lines=1)


def _fcopy_state(paths: Paths) -> None:
    transfer = {"finished": T, "result": HOSTILE, "size": 10, "duration": 0.5,
                "sha256": HOSTILE, "name": "/tmp/" + HOSTILE, "detail": HOSTILE}
    doc = {"service": "fcopy", "pid": 1, "started": T, "updated": T, "version": HOSTILE,
           "device": HOSTILE, "state": HOSTILE,
           "last_op": {"op": HOSTILE, "result": HOSTILE, "detail": HOSTILE, "time": T},
           "recent": [{"op": HOSTILE, "result": HOSTILE, "detail": HOSTILE, "time": T}] * 2,
           "last_error": {"message": HOSTILE, "time": T, "remedy": HOSTILE},
           "details": {"transport": HOSTILE, "recent_transfers": [transfer],
                       "in_progress": {"name": "/tmp/" + HOSTILE, "file_size": 10,
                                       "bytes_done": 5, "seconds": 1}}}
    os.makedirs(paths.run, exist_ok=True)
    with open(os.path.join(paths.run, "fcopy.json"), "w") as f:
        json.dump(doc, f)


def test_fcopy_recent_and_status(capsys: pytest.CaptureFixture[str], machine: Paths) -> None:
    _fcopy_state(machine)
    code, out, _ = run(capsys, "fcopy", "recent", "--root-dir", os.path.dirname(machine.sys))
    assert code == 0
    assert_inert(out, lines=2)
    code, out, _ = run(capsys, "fcopy", "status", "--root-dir", os.path.dirname(machine.sys))
    assert_inert(out, lines=5)
    code, out, _ = run(capsys, "fcopy", "recent", "--json",
                       "--root-dir", os.path.dirname(machine.sys))
    assert json.loads(out)[0]["name"] == "/tmp/" + HOSTILE


def _status_states(paths: Paths) -> None:
    _fcopy_state(paths)
    for service, pid in (("kvp", 4101), ("vss", 4102), ("heartbeat", 4104)):
        doc = {"service": service, "pid": pid, "started": T, "updated": T, "version": "1",
               "device": None, "state": HOSTILE,
               "last_op": {"op": HOSTILE, "result": HOSTILE, "detail": HOSTILE, "time": T},
               "recent": [{"op": HOSTILE, "result": HOSTILE, "detail": HOSTILE, "time": T}] * 2,
               "last_error": {"message": HOSTILE, "time": T, "remedy": HOSTILE},
               "details": {HOSTILE: HOSTILE, "protocol_version": HOSTILE}}
        if service == "kvp":
            # A local user picks its process name: the lock holder's command is hostile.
            doc["details"]["pools"] = {"1": {"records": 3, "lock_holder": {
                "pid": 4242, "uid": 65534, "user": "nobody", "command": HOSTILE,
                "kind": "FLOCK", "mode": "WRITE", "lock": "flock", "time": T}}}
        if service == "vss":
            doc["details"]["last_freeze"] = {
                "time": T, "ok": False, "reason": HOSTILE, "freeze_ms": 1,
                "mounts": [{"mount_point": HOSTILE, "fstype": HOSTILE, "state": HOSTILE,
                            "message": HOSTILE}],
                "hooks": [{"hook": HOSTILE, "argument": "freeze", "error": HOSTILE,
                           "seconds": 1}],
                "thaw": {"time": T, "ok": False, "why": HOSTILE, "reason": HOSTILE}}
        if service == "heartbeat":
            doc["details"]["health"] = {"level": HOSTILE, "reason": HOSTILE}
            doc["details"]["shutdown"] = {"hooks": [{"hook": HOSTILE, "result": HOSTILE}]}
        with open(os.path.join(paths.run, f"{service}.json"), "w") as f:
            json.dump(doc, f)
        sysfs_builder.add_process(paths, pid, f"/usr/bin/python3 /usr/bin/hvguest-{service}d")


def test_status_names_the_pool_lock_holder(capsys: pytest.CaptureFixture[str],
                                           machine: Paths) -> None:
    _status_states(machine)
    code, out, _ = run(capsys, "status", "kvp", "--root-dir", os.path.dirname(machine.sys))
    assert "pool 1 locked: flock held by pid 4242, user nobody" in out
    assert f"host requests failed at {T}: flock held by pid 4242 (user nobody" in out
    assert_inert(out)


@pytest.mark.parametrize("service", [None, "kvp", "vss", "fcopy", "heartbeat", "shutdown"])
def test_status(capsys: pytest.CaptureFixture[str], machine: Paths, service: str | None) -> None:
    _status_states(machine)
    argv = ["status", "--root-dir", os.path.dirname(machine.sys)]
    code, out, err = run(capsys, *argv, *([service] if service else []))
    assert "FORGED" in out or service in (None, "shutdown"), out  # the value is shown
    assert_inert(out)
    assert_inert(err)


def test_vss_status(capsys: pytest.CaptureFixture[str], machine: Paths) -> None:
    _status_states(machine)
    code, out, err = run(capsys, "vss", "status", "--root-dir", os.path.dirname(machine.sys))
    assert "FORGED" in out
    assert_inert(out)


def test_stderr_log_fallback_escapes(capfd: pytest.CaptureFixture[str]) -> None:
    handler = setup_logging("hvguest-test", target="stderr")
    try:
        logging.getLogger("hvguest.test").warning("host sent %s", HOSTILE)
        handler.flush()
    finally:
        logging.getLogger().removeHandler(handler)
    _, err = capfd.readouterr()
    assert_inert(err, lines=1)
    assert "host sent a\\x1b]0;owned\\x07b" in err


def test_error_messages_on_stderr_escaped(capsys: pytest.CaptureFixture[str],
                                         machine: Paths) -> None:
    code, _, err = run(capsys, "kvp", "delete", HOSTILE + "x", "--pool", "0",
                       "--pool-dir", machine.pool_dir)
    assert_inert(err, lines=1)


@pytest.mark.parametrize("unbuffered", [True, False])
def test_pipe_into_head_ends_quietly(machine: Paths, unbuffered: bool) -> None:
    store = PoolStore(machine, POOLS)
    for i in range(3000):
        store.set(1, f"key{i}", "v" * 200)
    POOLS.close_all()
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-B", "-m", "hvguest.cli.main", "kvp", "list",
           "--pool-dir", machine.pool_dir]
    # A real pipe whose reader goes away after one line, as `| head -1` does.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd="/")
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(60)
    assert first.startswith(b"# pool 0") or first.startswith(b"key0=")
    assert err == b"", err.decode()
    assert proc.returncode == 141

