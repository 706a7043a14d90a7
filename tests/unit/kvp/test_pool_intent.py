"""A record rewrite cut at a page boundary (a writer killed mid-write) is undone.

The kernel stops a write() into a regular file between two pages when the writer gets
SIGKILL; these tests leave a slot exactly as that does (the new head, the old tail)
after saving the intent the writer saves, then let a fresh reader open the pool.
``tests/system/test_kvp_torn_writes.py`` kills real writers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvguest.errors import LocalUsageError
from hvguest.paths import Paths
from hvguest.pool import PoolRegistry
from hvguest.pool.intent import (
    IntentFile,
    cut_write,
    decode_intent,
    encode_intent,
    intent_path,
    page_split,
)
from hvguest.wire.pool import POOL_RECORD_SIZE

R = POOL_RECORD_SIZE


def record(key: str, value: str) -> bytes:
    return key.encode().ljust(512, b"\0") + value.encode().ljust(2048, b"\0")


@pytest.fixture()
def pool(tmp_path: Path) -> Iterator[Paths]:
    """Pool 1 holding a, b, c: b (offset 2560) crosses the page boundary at 4096."""
    paths = Paths(pool_dir=str(tmp_path / "hyperv"))
    registry = PoolRegistry()
    pf = registry.open(paths, 1)
    for key in "abc":
        pf.set(key, f"old value of {key} " + key * 1500, unsafe=True)
    registry.close_all()
    yield paths
    registry.close_all()


def cut(paths: Paths, index: int, new: bytes, *, save_intent: bool = True) -> bytes:
    """Leave record ``index`` as a writer killed in its rewrite by ``new`` does."""
    path = paths.pool_file(1)
    offset = index * R
    split = page_split(offset)
    assert split is not None
    fd = os.open(path, os.O_RDWR)
    try:
        old = os.pread(fd, R, offset)
        if save_intent:
            intent = IntentFile(path, 1)
            intent.save(os.fstat(fd).st_ino, offset, old, new)
            intent.close()
        os.pwrite(fd, new[:split], offset)
    finally:
        os.close(fd)
    return old


def slot(paths: Paths, index: int) -> bytes:
    with open(paths.pool_file(1), "rb") as f:
        f.seek(index * R)
        return f.read(R)


def fresh_value(paths: Paths, key: str) -> str | None:
    registry = PoolRegistry()
    try:
        return registry.open(paths, 1).get(key)
    finally:
        registry.close_all()


def test_a_cut_rewrite_is_undone_by_the_next_reader(
    pool: Paths, caplog: pytest.LogCaptureFixture
) -> None:
    new = record("b", "new value of b " + "n" * 1800)
    old = cut(pool, 1, new)
    assert slot(pool, 1) not in (old, new)  # torn: the new head, the old tail
    with caplog.at_level(logging.WARNING):
        assert fresh_value(pool, "b") == "old value of b " + "b" * 1500
    assert slot(pool, 1) == old
    assert "record 1 was left half rewritten" in caplog.text
    assert fresh_value(pool, "a") is not None and fresh_value(pool, "c") is not None


def test_without_the_intent_the_cut_stays(pool: Paths) -> None:
    """What the intent is for: without it nothing can tell the torn record apart."""
    new = record("b", "new value of b " + "n" * 1800)
    cut(pool, 1, new, save_intent=False)
    value = fresh_value(pool, "b")
    assert value is not None and value.startswith("new value of b")
    assert value != "new value of b " + "n" * 1800


def test_a_finished_rewrite_is_left_alone(pool: Paths) -> None:
    new = record("b", "new value of b")
    path = pool.pool_file(1)
    fd = os.open(path, os.O_RDWR)
    old = os.pread(fd, R, R)
    IntentFile(path, 1).save(os.fstat(fd).st_ino, R, old, new)
    os.pwrite(fd, new, R)
    os.close(fd)
    assert fresh_value(pool, "b") == "new value of b"
    assert slot(pool, 1) == new


def test_a_slot_written_since_is_left_alone(pool: Paths) -> None:
    new = record("b", "new value of b " + "n" * 1800)
    cut(pool, 1, new)
    other = record("b", "someone else's value")
    fd = os.open(pool.pool_file(1), os.O_RDWR)
    os.pwrite(fd, other, R)
    os.close(fd)
    assert fresh_value(pool, "b") == "someone else's value"


def test_an_intent_for_another_inode_is_ignored(pool: Paths) -> None:
    new = record("b", "new value of b " + "n" * 1800)
    path = pool.pool_file(1)
    fd = os.open(path, os.O_RDWR)
    old = os.pread(fd, R, R)
    IntentFile(path, 1).save(os.fstat(fd).st_ino + 1, R, old, new)
    os.pwrite(fd, new[: page_split(R)], R)
    os.close(fd)
    value = fresh_value(pool, "b")
    assert value is not None and value.startswith("new value of b")  # not touched


@pytest.mark.parametrize("damage", ["crc", "short", "group-writable", "other owner"])
def test_a_damaged_or_foreign_intent_is_never_replayed(pool: Paths, damage: str) -> None:
    new = record("b", "new value of b " + "n" * 1800)
    cut(pool, 1, new)
    ipath = intent_path(pool.pool_file(1), 1)
    if damage == "crc":
        with open(ipath, "r+b") as f:
            f.seek(100)
            f.write(b"X")
    elif damage == "short":
        os.truncate(ipath, 1000)
    elif damage == "group-writable":
        os.chmod(ipath, 0o620)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root to give the intent file to another owner")
        os.chown(ipath, 65534, 65534)
    value = fresh_value(pool, "b")
    assert value is not None and value.startswith("new value of b")  # not replayed


def test_rewrites_save_an_intent_only_where_a_page_boundary_falls(pool: Paths) -> None:
    ipath = intent_path(pool.pool_file(1), 1)
    assert not os.path.exists(ipath)  # appends need none
    registry = PoolRegistry()
    try:
        pf = registry.open(pool, 1)
        pf.set("a", "rewritten a")  # offset 0: one page
        assert not os.path.exists(ipath)
        pf.set("b", "rewritten b")  # offset 2560: crosses 4096
        decoded = decode_intent(open(ipath, "rb").read())
        assert decoded is not None
        _inode, offset, old, new = decoded
        assert offset == R and old.startswith(b"b\0") and new.startswith(b"b\0")
        assert new[512:].rstrip(b"\0") == b"rewritten b"
        assert os.stat(ipath).st_mode & 0o777 == 0o600
    finally:
        registry.close_all()


def test_a_delete_cut_midway_leaves_whole_records(pool: Paths) -> None:
    """A delete moves later records up one by one: the rewrite of record 1 by
    record 2 cut at its page boundary is undone, leaving c twice, never half."""
    path = pool.pool_file(1)
    fd = os.open(path, os.O_RDWR)
    # What delete("a") does up to the cut: record 1 (b) moved to 0, then the intent
    # of moving record 2 (c) to 1, and half of that move.
    b, c = os.pread(fd, R, R), os.pread(fd, R, 2 * R)
    os.pwrite(fd, b, 0)
    IntentFile(path, 1).save(os.fstat(fd).st_ino, R, b, c)
    os.pwrite(fd, c[: page_split(R)], R)
    os.close(fd)
    registry = PoolRegistry()
    try:
        records = [(r.key_text(), r.value_text()) for r in registry.open(pool, 1).records()]
    finally:
        registry.close_all()
    assert [k for k, _v in records] == ["b", "b", "c"]
    assert all(v == f"old value of {k} " + k * 1500 for k, v in records)


def test_cut_write_is_a_head_of_the_new_record_and_the_rest_of_the_old() -> None:
    old, new = record("k", "o" * 2000), record("k", "n" * 2000)
    split = page_split(R)
    assert split == 4096 - R
    assert cut_write(new[:split] + old[split:], old, new)
    assert cut_write(new[:700] + old[700:], old, new)
    assert not cut_write(old, old, new) and not cut_write(new, old, new)
    assert not cut_write(new[:700] + b"x" + old[701:], old, new)
    assert not cut_write(b"x" * R, old, new) and not cut_write(new[:100], old, new)
    assert page_split(0) is None and page_split(R * 8) is None
    assert [page_split(i * R) is not None for i in range(8)] == [
        False, True, False, True, True, False, True, False,
    ]


def test_intent_round_trip() -> None:
    old, new = record("k", "old"), record("k", "new")
    data = encode_intent(7, 3 * R, old, new)
    assert decode_intent(data) == (7, 3 * R, old, new)
    assert decode_intent(data[:-1]) is None
    assert decode_intent(encode_intent(7, 3 * R + 1, old, new)) is None  # not a record


def test_a_link_planted_as_the_intent_file_is_never_followed(pool: Paths, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    ipath = intent_path(pool.pool_file(1), 1)
    os.symlink(target, ipath)
    registry = PoolRegistry()
    try:
        pf = registry.open(pool, 1)
        with pytest.raises(LocalUsageError, match="intent"):
            pf.set("b", "rewritten b")  # crosses a page boundary: needs the intent
        assert pf.get("b") == "old value of b " + "b" * 1500  # the record untouched
        pf.set("a", "rewritten a")  # needs none
        assert pf.get("a") == "rewritten a"
    finally:
        registry.close_all()
    assert target.read_bytes() == b"untouched"


@given(st.binary(max_size=6000))
def test_decode_intent_takes_any_bytes(data: bytes) -> None:
    decoded = decode_intent(data)
    assert decoded is None or (len(decoded[2]) == len(decoded[3]) == R)


@given(st.binary(min_size=1, max_size=64), st.integers(0, R))
def test_any_damaged_intent_is_refused(noise: bytes, at: int) -> None:
    data = bytearray(encode_intent(7, R, record("k", "old"), record("k", "new")))
    data[at : at + len(noise)] = bytes(b ^ 0xFF for b in noise)  # flip every bit there
    assert decode_intent(bytes(data)) is None


@pytest.mark.parametrize("planted", ["other owner", "hard link"])
def test_an_intent_file_placed_by_someone_else_is_never_written(
    pool: Paths, tmp_path: Path, planted: str
) -> None:
    ipath = intent_path(pool.pool_file(1), 1)
    if planted == "other owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the intent file to another owner")
        with open(ipath, "wb") as f:
            f.write(b"placed")
        os.chown(ipath, 65534, 65534)
        os.chmod(ipath, 0o600)
        placed = ipath
    else:
        placed = str(tmp_path / "elsewhere")
        with open(placed, "wb") as f:
            f.write(b"placed")
        os.link(placed, ipath)
    registry = PoolRegistry()
    try:
        pf = registry.open(pool, 1)
        with pytest.raises(LocalUsageError, match="intent"):
            pf.set("b", "rewritten b")
        assert pf.get("b") == "old value of b " + "b" * 1500
    finally:
        registry.close_all()
    with open(placed, "rb") as f:
        assert f.read() == b"placed"
