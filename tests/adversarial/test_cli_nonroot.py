"""hvguestctl run by an unprivileged user (uid 65534, as a separate process from /).

Commands that change the system say in one line that they need root and exit 1 before
touching anything; no traceback; ``shutdown-hooks run`` refuses instead of running
root's hooks with the caller's privileges. Read-only commands keep working.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator

import pytest
import sysfs_builder
from hostile import NOBODY, hvguestctl

from hvguest.paths import Paths
from hvguest.pool import PoolRegistry, PoolStore
from hvguest.vss.record import record_path, write_record

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()

pytestmark = pytest.mark.root


@pytest.fixture()
def machine() -> Iterator[Paths]:
    top = tempfile.mkdtemp(prefix="hvguest-nonroot-")
    os.chmod(top, 0o755)
    paths = sysfs_builder.build(os.path.join(top, "m"), kernel="6.12")
    for dirpath, dirnames, _files in os.walk(top):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
    PoolStore(paths, POOLS).set(1, "existing", "v")
    POOLS.close_all()
    yield paths
    shutil.rmtree(top)


def _root(paths: Paths) -> str:
    return os.path.dirname(paths.sys)


def _snapshot(top: str) -> dict[str, tuple[int, float, int]]:
    out = {}
    for dirpath, dirnames, files in os.walk(top):
        for name in dirnames + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime, st.st_mode)
    return out


def _refused(r: object, *, what: str) -> None:
    err = r.stderr.decode()  # type: ignore[attr-defined]
    assert r.returncode == 1, (r.returncode, err)  # type: ignore[attr-defined]
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert "root" in err and what in err, err


def test_timesync_setup_refuses(machine: Paths) -> None:
    before = _snapshot(_root(machine))
    r = hvguestctl("timesync", "setup", "--root-dir", _root(machine), user=NOBODY)
    _refused(r, what="timesync setup")
    assert _snapshot(_root(machine)) == before


def test_shutdown_hooks_run_refuses_and_runs_nothing(machine: Paths) -> None:
    hooks = os.path.join(machine.etc, "shutdown.d")
    os.makedirs(hooks, exist_ok=True)
    os.chmod(hooks, 0o755)
    marker = os.path.join(tempfile.mkdtemp(prefix="hvguest-marker-"), "ran")
    os.chmod(os.path.dirname(marker), 0o777)
    hook = os.path.join(hooks, "10-mark")
    with open(hook, "w") as f:
        f.write(f"#!/bin/sh\ntouch {marker}\n")
    os.chmod(hook, 0o755)
    try:
        r = hvguestctl("shutdown-hooks", "run", "--action", "test", "--root-dir",
                       _root(machine), user=NOBODY)
        _refused(r, what="shutdown-hooks run")
        assert not os.path.exists(marker)
    finally:
        shutil.rmtree(os.path.dirname(marker))


def test_vss_thaw_refuses_and_keeps_the_record(machine: Paths) -> None:
    write_record(machine, {"pid": 999999, "started": "x",
                           "mounts": [{"mount_point": "/", "dev": "0:1", "state": "frozen"}]})
    with open(record_path(machine), "rb") as f:
        before = f.read()
    for extra in ([], ["--if-frozen"]):
        r = hvguestctl("vss", "thaw", *extra, "--root-dir", _root(machine), user=NOBODY)
        _refused(r, what="vss thaw")
    with open(record_path(machine), "rb") as f:
        assert f.read() == before


@pytest.mark.parametrize("argv", [["set", "k", "v"], ["delete", "existing"],
                                  ["set", "k", "v", "--pool", "3"]])
def test_kvp_writes_to_root_pools_refused(machine: Paths, argv: list[str]) -> None:
    before = _snapshot(_root(machine))
    r = hvguestctl("kvp", *argv, "--pool-dir", machine.pool_dir, user=NOBODY)
    _refused(r, what=f"kvp {argv[0]}")
    assert _snapshot(_root(machine)) == before


def test_read_only_commands_still_work(machine: Paths) -> None:
    r = hvguestctl("kvp", "get", "existing", "--pool-dir", machine.pool_dir, user=NOBODY)
    assert (r.returncode, r.stdout) == (0, b"v\n"), r.stderr
    r = hvguestctl("shutdown-hooks", "list", "--root-dir", _root(machine), user=NOBODY)
    assert r.returncode in (0, 2) and b"Traceback" not in r.stderr
    r = hvguestctl("status", "--root-dir", _root(machine), user=NOBODY)
    assert r.returncode in (0, 1, 2) and b"Traceback" not in r.stderr, r.stderr


def test_pool_dir_is_root_owned(machine: Paths) -> None:
    st = os.stat(machine.pool_dir)
    assert st.st_uid == 0 and not st.st_mode & stat.S_IWOTH
