"""The pool store: format, record-granular writes, cache, limits, repair."""

from __future__ import annotations

import os
import stat

import pytest

from hvguest.errors import LocalUsageError
from hvguest.paths import Paths
from hvguest.pool import OwnKeys, PoolRecordError, PoolRegistry, PoolStore, check_item
from hvguest.pool import file as pool_file
from hvguest.wire.pool import POOL_RECORD_SIZE, PoolRecord, decode_pool

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()

R = POOL_RECORD_SIZE


@pytest.fixture()
def paths(tmp_path):
    yield Paths(pool_dir=str(tmp_path / "hyperv"))
    POOLS.close_all()


def raw_record(key: bytes, value: bytes) -> bytes:
    return key.ljust(512, b"\0") + value.ljust(2048, b"\0")


def test_open_all_creates_dir_and_files_with_modes(paths):
    old = os.umask(0o077)
    try:
        PoolStore(paths, POOLS).open_all()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(paths.pool_dir).st_mode) == 0o755
    for n in range(5):
        st = os.stat(paths.pool_file(n))
        assert stat.S_IMODE(st.st_mode) == 0o644
        assert st.st_size == 0


def test_set_get_update_in_place_and_format(paths):
    pf = POOLS.open(paths, 1)
    pf.set("a", "1")
    pf.set("b", "2")
    pf.set("a", "x" * 10)
    pf.set("a", "y")  # shorter value: no stale tail on disk
    data = open(paths.pool_file(1), "rb").read()
    assert len(data) == 2 * R
    assert data[:R] == raw_record(b"a", b"y")
    assert data[R:] == raw_record(b"b", b"2")
    assert pf.get("a") == "y"
    assert pf.get("missing") is None
    assert pf.items() == [("a", "y"), ("b", "2")]
    assert pf.record_count() == 2


def test_delete_shifts_later_records_and_keeps_foreign_bytes(paths):
    path = paths.pool_file(0)
    os.makedirs(paths.pool_dir)
    # A foreign record with stale bytes after its NUL must be moved byte for byte.
    foreign = b"k3\0junk".ljust(512, b"\0") + b"v3\0stale".ljust(2048, b"\0")
    with open(path, "wb") as f:
        f.write(raw_record(b"k1", b"v1") + raw_record(b"k2", b"v2") + foreign)
    pf = POOLS.open(paths, 0)
    assert pf.delete("k2") is True
    data = open(path, "rb").read()
    assert data == raw_record(b"k1", b"v1") + foreign
    assert pf.delete("k2") is False
    assert pf.items() == [("k1", "v1"), ("k3", "v3")]


def test_first_match_wins_like_the_c_daemon(paths):
    os.makedirs(paths.pool_dir)
    with open(paths.pool_file(1), "wb") as f:
        f.write(raw_record(b"dup", b"first") + raw_record(b"dup", b"second"))
    pf = POOLS.open(paths, 1)
    assert pf.get("dup") == "first"
    pf.set("dup", "new")
    records, _ = decode_pool(open(paths.pool_file(1), "rb").read())
    assert [r.value for r in records] == [b"new", b"second"]


def test_external_change_is_seen(paths):
    pf = POOLS.open(paths, 1)
    pf.set("mine", "1")
    assert pf.items() == [("mine", "1")]
    # cloud-init style append (flock, no fcntl)
    with open(paths.pool_file(1), "ab") as f:
        f.write(raw_record(b"CLOUD_INIT|1|x", b"{}"))
    assert pf.items() == [("mine", "1"), ("CLOUD_INIT|1|x", "{}")]
    # an in-place rewrite of the same size in the same tick as our write
    pf.set("mine", "2")
    with open(paths.pool_file(1), "r+b") as f:
        f.write(raw_record(b"mine", b"3"))
    assert pf.get("mine") == "3"
    # boot-time truncation by cloud-init
    open(paths.pool_file(1), "wb").close()
    assert pf.items() == []


def test_cache_avoids_rereads(paths):
    pf = POOLS.open(paths, 1)
    for i in range(50):
        pf.set(f"k{i}", str(i))
    before = pf.reloads
    for i in range(50):
        assert pf.get(f"k{i}") == str(i)
    pf.items()
    assert pf.reloads == before


def test_partial_trailing_record_ignored_and_repaired(paths):
    os.makedirs(paths.pool_dir)
    with open(paths.pool_file(1), "wb") as f:
        f.write(raw_record(b"a", b"1") + b"half a record")
    pf = POOLS.open(paths, 1)
    assert pf.items() == [("a", "1")]
    assert os.path.getsize(paths.pool_file(1)) == R  # repaired under lock
    pf.set("b", "2")
    assert pf.items() == [("a", "1"), ("b", "2")]


def test_invalid_records_are_skipped_not_fatal(paths, caplog):
    os.makedirs(paths.pool_dir)
    with open(paths.pool_file(1), "wb") as f:
        f.write(raw_record(b"good1", b"v"))
        f.write(raw_record(b"bad\xff", b"v"))
        f.write(raw_record(b"badval", b"\xc3("))
        f.write(b"n" * 512 + b"unterminated key".ljust(2048, b"\0"))
        f.write(b"\0" * R)
        f.write(raw_record(b"good2", b"w"))
    pf = POOLS.open(paths, 1)
    assert pf.items() == [("good1", "v"), ("good2", "w")]
    assert pf.item(1) == ("good2", "w")
    assert pf.item(2) is None
    assert pf.record_count() == 6
    assert "invalid UTF-8" in caplog.text
    pf.items()  # throttled: no second line per record
    assert caplog.text.count("bad\\xff") == 1
    with pytest.raises(PoolRecordError):
        pf.get("badval")


@pytest.mark.parametrize(
    ("key", "value", "unsafe", "message"),
    [
        ("k" * 255, "v", False, "KVP key is 255 bytes, limit 254 (pool 1)"),
        ("k", "v" * 1023, False, "KVP value is 1023 bytes, limit 1022 (pool 1)"),
        ("k" * 512, "v", True, "KVP key is 512 bytes, limit 511 (pool 1)"),
        ("k", "v" * 2048, True, "KVP value is 2048 bytes, limit 2047 (pool 1)"),
        ("k\0", "v", False, "NUL"),
        ("k", "\udcff", False, "lone surrogate"),
        ("", "v", False, "empty"),
    ],
)
def test_limits(paths, key, value, unsafe, message):
    pf = POOLS.open(paths, 1)
    with pytest.raises(LocalUsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pf.set(key, value, unsafe=unsafe)
    assert pf.record_count() == 0


def test_limits_boundaries_accepted():
    check_item("k" * 254, "v" * 1022, pool=1)
    check_item("k" * 511, "v" * 2047, pool=1, unsafe=True)
    check_item("é" * 127, "", pool=1)  # 254 bytes


def test_pool_range(paths):
    for bad in (-1, 5, 200):
        with pytest.raises(LocalUsageError):
            POOLS.open(paths, bad)


def test_same_process_shares_one_descriptor(paths):
    assert POOLS.open(paths, 3) is PoolStore(paths, POOLS).pool(3)


def test_registry_is_an_object_its_owner_closes(paths):
    store = PoolStore(paths, POOLS, lock_timeout=0.5, max_records=7)
    pf = store.pool(2)
    assert (pf.lock_timeout, pf.max_records) == (0.5, 7)
    pf.set("k", "v")
    fd = pf._fd
    assert fd is not None
    # Another registry is another owner: its own PoolFile, not this one.
    other = PoolRegistry()
    try:
        assert other.open(paths, 2) is not pf
    finally:
        other.close_all()
    assert os.fstat(fd)  # closing the other owner's files left ours open
    POOLS.close_all()
    with pytest.raises(OSError):
        os.fstat(fd)
    # The store drops what it cached: a fresh PoolFile (one descriptor) from now on.
    again = store.pool(2)
    assert again is not pf and again is POOLS.open(paths, 2)
    assert again.get("k") == "v"


def test_replaced_file_is_reopened(paths):
    pf = POOLS.open(paths, 0)
    pf.set("a", "1")
    tmp = paths.pool_file(0) + ".new"
    with open(tmp, "wb") as f:
        f.write(raw_record(b"z", b"9"))
    os.replace(tmp, paths.pool_file(0))
    assert pf.items() == [("z", "9")]
    pf.set("y", "8")
    assert decode_pool(open(paths.pool_file(0), "rb").read())[0] == [
        PoolRecord(b"z", b"9"),
        PoolRecord(b"y", b"8"),
    ]


def test_own_keys_republished_after_truncation(paths):
    pf = POOLS.open(paths, 1)
    keys = OwnKeys(pf)
    keys.publish("hvguest.version", "1")
    pf.set("CLOUD_INIT|1|other", "x")
    assert keys.check() == 0
    open(paths.pool_file(1), "wb").close()  # cloud-init's once-per-boot truncation
    assert keys.check() == 1
    assert pf.get("hvguest.version") == "1"
    with pytest.raises(LocalUsageError):
        keys.publish("other", "x")
    keys.withdraw("hvguest.version")
    assert pf.items() == []


def test_renamed_away_file_is_noticed_within_a_second(paths, monkeypatch):
    pf = POOLS.open(paths, 0)
    pf.set("a", "1")
    assert pf.get("a") == "1"
    # An admin moves the file aside (the old inode keeps a name) and puts another one.
    os.rename(paths.pool_file(0), paths.pool_file(0) + ".bak")
    with open(paths.pool_file(0), "wb") as f:
        f.write(raw_record(b"a", b"2"))
    monkeypatch.setattr(pool_file, "PATH_CHECK_PERIOD", 0.0)
    assert pf.get("a") == "2"


def test_file_moved_aside_while_a_set_waits_for_the_lock(paths, monkeypatch):
    """The path is checked under the locks: a file moved aside (still linked, so its
    link count says nothing) while we waited for its lock gets no write; the file the
    path names then does."""
    pf = POOLS.open(paths, 0)
    pf.set("a", "1")
    acquire = pf._acquire
    moves = []

    def acquire_after_a_move(fd, exclusive, deadline, *, posix):
        if not moves:  # another writer moves the file aside while we wait
            moves.append(fd)
            os.rename(paths.pool_file(0), paths.pool_file(0) + ".bak")
            with open(paths.pool_file(0), "wb") as f:
                f.write(raw_record(b"z", b"9"))
        acquire(fd, exclusive, deadline, posix=posix)

    monkeypatch.setattr(pf, "_acquire", acquire_after_a_move)
    pf.set("b", "2")
    assert moves
    assert decode_pool(open(paths.pool_file(0) + ".bak", "rb").read())[0] == [
        PoolRecord(b"a", b"1"),
    ]
    assert decode_pool(open(paths.pool_file(0), "rb").read())[0] == [
        PoolRecord(b"z", b"9"),
        PoolRecord(b"b", b"2"),
    ]


def test_deleted_file_is_noticed(paths):
    pf = POOLS.open(paths, 0)
    pf.set("a", "1")
    os.unlink(paths.pool_file(0))
    assert pf.get("a") is None
