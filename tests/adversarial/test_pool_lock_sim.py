"""A real hvguest-kvpd behind the simulated host, against a hostile local user.

uid 65534 opens the world-readable pool 1 read-only and takes an exclusive flock. The
host's SET on that pool gets HV_E_FAIL after the configured bounded wait (not the
kernel's 30 s and not forever, as with hv_kvp_daemon), the daemon's published state
and ``hvguestctl status kvp`` name the holder's pid and user. A pool at its record
limit refuses a new key with HV_E_FAIL and its file is left byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sysfs_builder
from hostile import NOBODY, assert_inert, user_name

from hvguest.sim.client import SimClient

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.system]

HV_S_OK = 0
HV_E_FAIL = 0x80004005
CONFIG = "kvp:\n  publish_version: false\n  max_records: 100\n  lock_timeout: 0.5\n"
LOCKER = (
    "import fcntl, os, signal, sys\n"
    "fd = os.open('/var/lib/hyperv/.kvp_pool_1', os.O_RDONLY)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print(os.getpid(), flush=True)\n"
    "signal.pause()\n"
)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimClient]:
    workdir = str(tmp_path_factory.mktemp("kvpd-adv"))
    config = os.path.join(workdir, "hvguest.yaml")
    with open(config, "w") as f:
        f.write(CONFIG)
    command = [sys.executable, "-m", "hvguest.daemons.kvpd", "--config", config]
    with SimClient.start(command, workdir=os.path.join(workdir, "sim")) as client:
        client.stderr_path = os.path.join(workdir, "sim", "sim.stderr")  # type: ignore[attr-defined]
        yield client


def _log_lines(sim: SimClient, text: str) -> list[str]:
    with open(sim.stderr_path, encoding="utf-8", errors="replace") as f:  # type: ignore[attr-defined]
        return [line for line in f if text in line]


def _state(sim: SimClient) -> dict[str, Any]:
    with open(os.path.join(sim.root, "run/hvguest/kvp.json")) as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def test_pool_full_is_hv_e_fail_and_writes_nothing(sim: SimClient) -> None:
    for i in range(100):
        assert sim.kvp_set(0, f"fill{i}", "v") == HV_S_OK
    path = os.path.join(sim.root, "var/lib/hyperv/.kvp_pool_0")
    with open(path, "rb") as f:
        before = f.read()
    assert sim.kvp_set(0, "one-too-many", "v") == HV_E_FAIL
    assert sim.kvp_set(0, "and-another", "v") == HV_E_FAIL
    # The daemon logs before it replies: both refusals are logged by now, as one line
    # (once per period).
    assert len(_log_lines(sim, "KVP pool 0 is full: 100 records")) == 1
    assert sim.kvp_set(0, "fill3", "updated") == HV_S_OK  # updates still work
    with open(path, "rb") as f:
        after = f.read()
    assert len(after) == len(before)
    assert after.replace(b"updated", b"v\0\0\0\0\0\0") == before
    deadline = time.monotonic() + 10
    while "kvp.max_records" not in str(_state(sim).get("last_error")):
        assert time.monotonic() < deadline, _state(sim).get("last_error")
        time.sleep(0.2)


def test_flock_by_unprivileged_user_fails_fast_and_is_named(sim: SimClient, tmp_path: Any) -> None:
    assert sim.kvp_set(1, "before", "v") == HV_S_OK
    locker = sim.spawn(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         "/usr/bin/python3", "-c", LOCKER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert locker.stdout is not None
        pid = int(locker.stdout.readline())
        started = time.monotonic()
        assert sim.kvp_set(1, "during", "v") == HV_E_FAIL
        # The second request: the same holder, answered without another wait.
        assert sim.kvp_set(1, "during2", "v") == HV_E_FAIL
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 10
        while "lock_holder" not in _state(sim)["details"]["pools"]["1"]:
            assert time.monotonic() < deadline, _state(sim)["details"]["pools"]["1"]
            time.sleep(0.2)
        holder = _state(sim)["details"]["pools"]["1"]["lock_holder"]
        assert holder["pid"] == pid and holder["uid"] == NOBODY
        assert holder["user"] == user_name(NOBODY) and holder["lock"] == "flock"
        error = _state(sim)["last_error"]["message"]
        assert f"pid {pid} (user {user_name(NOBODY)}" in error
        # hvguestctl status on the daemon's published state and its /proc; the simulator
        # has no VMBus sysfs, so a fixture machine supplies the device view.
        machine = sysfs_builder.build(os.path.join(tmp_path, "m"), kernel="6.12")
        result = subprocess.run(
            [sys.executable, "-B", "-m", "hvguest.cli.main", "status", "kvp",
             "--root-dir", os.path.dirname(machine.sys),
             "--run-dir", os.path.join(sim.root, "run/hvguest"),
             "--proc-root", os.path.join(sim.root, "proc")],
            capture_output=True, timeout=60, check=False, cwd="/")
        status = result.stdout.decode()
        assert f"held by pid {pid}" in status and user_name(NOBODY) in status, status
        assert_inert(status)
        print(f"two host requests against a held lock answered in {elapsed:.2f} s")
    finally:
        locker.kill()
        locker.wait(10)
    deadline = time.monotonic() + 10
    while sim.kvp_set(1, "after", "v") != HV_S_OK:  # released: served again
        assert time.monotonic() < deadline
        time.sleep(0.2)
