"""Bounded pools: a host cannot fill the disk, a local user cannot stall the host.

* pool full: a new key past ``kvp.max_records`` is refused (HV_E_FAIL for the host) and
  nothing is written; updates and deletes still work.
* pool lock: an unprivileged user (uid 65534) flocks the world-readable pool file; the
  write gives up after the bounded wait and names the holder's pid and user, and the
  next write fails at once while the same process still holds the lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from hostile import NOBODY, user_name

from hvguest.paths import Paths
from hvguest.pool import PoolBusyError, PoolFullError, PoolRegistry, PoolStore
from hvguest.wire.pool import POOL_RECORD_SIZE

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()

pytestmark = pytest.mark.root


@pytest.fixture()
def paths() -> Iterator[Paths]:
    # Readers (uid 65534 here) reach the pool files as on a real machine: through 0755
    # directories (pytest's own tmp_path is 0700).
    top = tempfile.mkdtemp(prefix="hvguest-adv-")
    os.chmod(top, 0o755)
    yield Paths(pool_dir=os.path.join(top, "hyperv"), proc="/proc")
    POOLS.close_all()
    shutil.rmtree(top)


def test_pool_full_refuses_new_keys_and_writes_nothing(paths: Paths) -> None:
    store = PoolStore(paths, POOLS, max_records=5)
    for i in range(5):
        store.set(0, f"k{i}", "v")
    path = paths.pool_file(0)
    with open(path, "rb") as f:
        before = f.read()
    with pytest.raises(PoolFullError, match=r"pool 0 is full: 5 records \(kvp.max_records\)"):
        store.set(0, "one-more", "v")
    with open(path, "rb") as f:
        assert f.read() == before
    store.set(0, "k1", "changed")  # an update in place still works
    assert store.delete(0, "k2")
    store.set(0, "one-more", "v")  # room again
    assert len(store.items(0)) == 5


def test_pool_files_are_0644(paths: Paths) -> None:
    # The documented decision: world-readable like hv_kvp_daemon's (readers such as
    # Microsoft's validation suite and unprivileged `hvguestctl kvp list` rely on it).
    os.umask(0o077)
    try:
        PoolStore(paths, POOLS).open_all()
    finally:
        os.umask(0o022)
    for n in range(5):
        assert stat.S_IMODE(os.stat(paths.pool_file(n)).st_mode) == 0o644


def _lock_as_nobody(path: str) -> tuple[int, int]:
    """A child that becomes uid 65534, flocks ``path`` (read-only) and waits; (pid, fd)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fd = os.open(path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(w, b"locked")
            signal.pause()
        finally:
            os._exit(1)
    os.close(w)
    assert os.read(r, 16) == b"locked"
    return pid, r


def _stop(pid: int, fd: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(fd)


def test_lock_held_by_unprivileged_user_fails_bounded_and_names_holder(paths: Paths) -> None:
    store = PoolStore(paths, POOLS, lock_timeout=0.3)
    store.set(1, "before", "v")
    POOLS.close_all()
    path = paths.pool_file(1)
    assert os.stat(path).st_mode & stat.S_IROTH
    pid, fd = _lock_as_nobody(path)
    try:
        store = PoolStore(paths, POOLS, lock_timeout=0.3)
        with pytest.raises(PoolBusyError) as exc:
            store.set(1, "k", "v")
        text = str(exc.value)
        assert f"pid {pid}" in text and f"user {user_name(NOBODY)}" in text, text
        assert "gave up after 0.3 s" in text
        holder = store.pool(1).lock_holder
        assert holder is not None and holder["pid"] == pid and holder["uid"] == NOBODY
        # Same holder still there: the next request fails at once, saying so.
        with pytest.raises(PoolBusyError, match="still locked"):
            store.set(1, "k", "v")
        with open(path, "rb") as f:
            assert len(f.read()) == POOL_RECORD_SIZE  # nothing written
    finally:
        _stop(pid, fd)
    store.set(1, "k", "v")  # released: works again, and the holder is forgotten
    assert store.pool(1).lock_holder is None


def test_holder_from_injected_proc(tmp_path: Any) -> None:
    from hvguest.lockholders import find_holders

    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "locks").write_text(
        "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF\n"
        "1: -> FLOCK  ADVISORY  WRITE 99 08:01:1234 0 EOF\n"
        "2: POSIX  ADVISORY  WRITE 77 08:01:1234 0 EOF\n"
        "3: FLOCK  ADVISORY  WRITE 55 08:02:1234 0 EOF\n"
    )
    (proc / "4242" / "status").write_text("Name:\tevil\x1b[2J\nUid:\t65534\t65534\t65534\t65534\n")
    (proc / "4242" / "comm").write_text("evil\x1b[2J\n")
    holders = find_holders(str(proc), os.makedev(8, 1), 1234, kind="flock")
    assert [(h.pid, h.uid, h.command) for h in holders] == [(4242, 65534, "evil\x1b[2J")]
    posix = find_holders(str(proc), os.makedev(8, 1), 1234, kind="posix")
    assert [h.pid for h in posix] == [77]
    # overlayfs: the lock is listed under the upper filesystem's device
    overlay = find_holders(str(proc), os.makedev(0, 0x37), 1234, kind="flock")
    assert sorted(h.pid for h in overlay) == [55, 4242]
