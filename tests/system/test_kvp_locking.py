"""Pool locking across processes: hvguest waits for both the C daemon's fcntl lock
and cloud-init's flock, with a bounded wait and an error that names the holder."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hvguest.paths import Paths
from hvguest.pool import PoolBusyError, PoolRegistry

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()

pytestmark = [pytest.mark.system]

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
if sys.argv[2] == "fcntl":
    fcntl.lockf(fd, fcntl.LOCK_EX)          # F_SETLKW F_WRLCK, whole file: hv_kvp_daemon
else:
    fcntl.flock(fd, fcntl.LOCK_EX)          # cloud-init / azure-init
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
"""


@pytest.fixture()
def paths(tmp_path):
    yield Paths(pool_dir=str(tmp_path))
    POOLS.close_all()


def hold(path: str, kind: str, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path, kind, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize(("kind", "named"), [("fcntl", "hv_kvp_daemon"), ("flock", "cloud-init")])
def test_busy_lock_gives_up_with_a_clear_error(paths, kind, named):
    pf = POOLS.open(paths, 1, lock_timeout=0.3)
    pf.set("a", "1")
    proc = hold(pf.path, kind, 5)
    try:
        started = time.monotonic()
        with pytest.raises(PoolBusyError, match=named) as exc:
            pf.set("b", "2")
        assert time.monotonic() - started < 2
        assert "gave up after 0.3 s (pool 1)" in str(exc.value)
    finally:
        proc.kill()
        proc.wait()
    pf.set("b", "2")
    assert pf.items() == [("a", "1"), ("b", "2")]


@pytest.mark.parametrize("kind", ["fcntl", "flock"])
def test_waits_for_a_short_holder(paths, kind):
    pf = POOLS.open(paths, 0, lock_timeout=5)
    pf.set("a", "1")
    proc = hold(pf.path, kind, 0.5)
    try:
        started = time.monotonic()
        pf.set("a", "2")
        assert time.monotonic() - started >= 0.3
    finally:
        proc.wait()
    assert pf.get("a") == "2"
