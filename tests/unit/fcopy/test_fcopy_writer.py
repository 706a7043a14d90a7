"""The file writer: temporary file, rename into place, modes, failures."""

from __future__ import annotations

import errno
import hashlib
import os
import stat

import pytest

from hvguest.fcopy.policy import PathPolicy, TransferRefused
from hvguest.fcopy.writer import TEMP_PREFIX, FileWriter
from hvguest.wire.status import HvStatus


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "in"
    r.mkdir()
    return r


@pytest.fixture(params=[True, False], ids=["O_TMPFILE", "hidden-name"])
def writer(request, root):
    return FileWriter(PathPolicy([str(root)]), use_tmpfile=request.param)


def test_nothing_at_final_name_until_commit(writer, root):
    writer.open(str(root), "f.bin", overwrite=False, create_path=False)
    writer.write(0, b"hello ")
    writer.write(6, b"world")
    assert not (root / "f.bin").exists()
    done = writer.commit()
    assert (root / "f.bin").read_bytes() == b"hello world"
    assert done.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert done.size == 11 and done.path == f"{root}/f.bin"
    assert sorted(os.listdir(root)) == ["f.bin"]
    assert stat.S_IMODE(os.stat(root / "f.bin").st_mode) == 0o644


def test_mode_is_exact_despite_umask(root):
    w = FileWriter(PathPolicy([str(root)]), file_mode=0o640)
    old = os.umask(0o077)
    try:
        w.open(str(root), "m", overwrite=False, create_path=False)
        w.commit()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(root / "m").st_mode) == 0o640


def test_discard_leaves_nothing(writer, root):
    writer.open(str(root), "f", overwrite=False, create_path=False)
    writer.write(0, b"partial")
    writer.discard("cancel")
    assert os.listdir(root) == []
    assert not writer.active


def test_existing_file_without_overwrite(writer, root):
    (root / "f").write_bytes(b"old")
    with pytest.raises(TransferRefused) as info:
        writer.open(str(root), "f", overwrite=False, create_path=False)
    assert info.value.status == HvStatus.HV_ERROR_ALREADY_EXISTS
    assert (root / "f").read_bytes() == b"old"
    assert os.listdir(root) == ["f"]


def test_overwrite_replaces_atomically(writer, root):
    (root / "f").write_bytes(b"old contents")
    writer.open(str(root), "f", overwrite=True, create_path=False)
    writer.write(0, b"new")
    assert (root / "f").read_bytes() == b"old contents"
    writer.commit()
    assert (root / "f").read_bytes() == b"new"
    assert os.listdir(root) == ["f"]


def test_overwrite_replaces_symlink_not_its_target(writer, root, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(victim, root / "f")
    writer.open(str(root), "f", overwrite=True, create_path=False)
    writer.write(0, b"data")
    writer.commit()
    assert victim.read_bytes() == b"keep"
    assert not (root / "f").is_symlink() and (root / "f").read_bytes() == b"data"


def test_file_appearing_during_transfer_is_not_clobbered(writer, root):
    writer.open(str(root), "f", overwrite=False, create_path=False)
    writer.write(0, b"mine")
    (root / "f").write_bytes(b"theirs")
    with pytest.raises(TransferRefused) as info:
        writer.commit()
    assert info.value.status == HvStatus.HV_ERROR_ALREADY_EXISTS
    assert (root / "f").read_bytes() == b"theirs"
    assert os.listdir(root) == ["f"]


def test_directory_at_target_refused(writer, root):
    (root / "d").mkdir()
    with pytest.raises(TransferRefused, match="is a directory"):
        writer.open(str(root), "d", overwrite=True, create_path=False)


def test_enospc_maps_to_disk_full(writer, root, monkeypatch):
    writer.open(str(root), "f", overwrite=False, create_path=False)

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(TransferRefused) as info:
        writer.write(0, b"x" * 100)
    assert info.value.status == HvStatus.HV_ERROR_DISK_FULL
    assert not writer.active
    assert os.listdir(root) == []


def test_other_write_error_is_e_fail(writer, root, monkeypatch):
    writer.open(str(root), "f", overwrite=False, create_path=False)
    monkeypatch.setattr(os, "pwrite", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O")))
    with pytest.raises(TransferRefused) as info:
        writer.write(0, b"x")
    assert info.value.status == HvStatus.HV_E_FAIL


def test_short_writes_are_completed(writer, root, monkeypatch):
    real = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, off: real(fd, bytes(data)[:3], off))
    writer.open(str(root), "f", overwrite=False, create_path=False)
    writer.write(0, b"0123456789")
    monkeypatch.setattr(os, "pwrite", real)
    writer.commit()
    assert (root / "f").read_bytes() == b"0123456789"


def test_hidden_temp_name_is_hidden(root):
    w = FileWriter(PathPolicy([str(root)]), use_tmpfile=False)
    w.open(str(root), "f", overwrite=False, create_path=False)
    [name] = os.listdir(root)
    assert name.startswith(TEMP_PREFIX)
    assert w.temp_path == f"{root}/{name}"
    w.discard("x")
    assert os.listdir(root) == []


def test_writeback_started_every_window(root, monkeypatch):
    import hvguest.fcopy.writer as writer_module

    calls = []
    monkeypatch.setattr(writer_module, "WRITEBACK_WINDOW", 10)
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, off, length, advice: calls.append((off, length))
    )
    w = FileWriter(PathPolicy([str(root)]))
    w.open(str(root), "f", overwrite=False, create_path=False)
    for i in range(5):
        w.write(i * 6, b"abcdef")
    w.commit()
    assert calls == [(0, 12), (12, 12)]
    assert (root / "f").read_bytes() == b"abcdef" * 5


def test_deferred_hash_survives_the_callers_buffer_being_reused(writer, root):
    """The daemon loops hash a fragment after its reply, when the buffer it came
    in (the read buffer, the ring) may already hold the next message."""
    writer.open(str(root), "d.bin", overwrite=False, create_path=False)
    buffer = bytearray(b"first ")
    writer.write(0, memoryview(buffer), defer_hash=True)
    buffer[:] = b"XXXXXX"  # the next message arrives before hash_deferred()
    writer.hash_deferred()
    buffer[:] = b"second"
    writer.write(6, memoryview(buffer), defer_hash=True)
    buffer[:] = b"YYYYYY"  # not hashed yet: commit hashes it first
    done = writer.commit()
    assert (root / "d.bin").read_bytes() == b"first second"
    assert done.sha256 == hashlib.sha256(b"first second").hexdigest()


def test_deferred_fragment_then_out_of_order_write_rehashes_the_file(writer, root):
    writer.open(str(root), "o.bin", overwrite=False, create_path=False)
    writer.write(0, b"abc", defer_hash=True)
    writer.write(1, b"BC", defer_hash=True)  # a resend: the file is hashed at commit
    assert writer.commit().sha256 == hashlib.sha256(b"aBC").hexdigest()
