"""atomic_write: the whole file or the old one, the mode asked for, and a temporary
name nobody else could have placed (never following or reusing what is there)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hvguest import files
from hvguest.files import atomic_write


def test_writes_replaces_and_sets_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    atomic_write(str(target), "one", mode=0o640, dir_mode=0o750)
    atomic_write(str(target), b"two", mode=0o640, dir_mode=0o750)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o750
    assert os.listdir(target.parent) == ["state.json"]


def _fixed_names(monkeypatch: pytest.MonkeyPatch, *names: bytes) -> None:
    queue = list(names)
    monkeypatch.setattr(files.os, "urandom", lambda n: queue.pop(0) if queue else b"\xff" * n)


def test_a_planted_link_at_the_temporary_name_is_never_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = tmp_path / f".hvguest-{'00' * 6}.tmp"
    planted.symlink_to(victim)
    _fixed_names(monkeypatch, bytes(6), b"\x01" * 6)
    atomic_write(str(tmp_path / "target"), "data")
    assert victim.read_text() == "precious" and planted.is_symlink()
    assert (tmp_path / "target").read_text() == "data"


def test_no_free_name_is_an_error_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / f".hvguest-{'00' * 6}.tmp").write_text("theirs")
    monkeypatch.setattr(files.os, "urandom", lambda n: bytes(n))
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        atomic_write(str(tmp_path / "target"), "data")
    assert not (tmp_path / "target").exists()
    assert (tmp_path / f".hvguest-{'00' * 6}.tmp").read_text() == "theirs"


def test_a_failed_write_leaves_no_temporary(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic_write(str(tmp_path / "target"), 42)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_the_writer_needs_no_tempfile() -> None:
    """tempfile pulls shutil, bz2, lzma and random into every daemon."""
    import subprocess
    import sys

    code = "import sys, hvguest.files; print('tempfile' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    assert out == "False"
