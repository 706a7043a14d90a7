"""hvguest-sim demo --workdir: root never writes through what a local user planted.

A user who can write to the parent (a shared /tmp-like directory) pre-creates the
work directory with DIR/vss/ext4.img as a symlink to a file of someone else's (here
a stand-in for a disk). The demo must refuse the directory before writing anything:
the target is neither truncated nor formatted.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.root]

NOBODY = 65534


def test_planted_symlink_in_workdir_is_neither_written_nor_formatted(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    planted = shared / "demo"
    (planted / "vss").mkdir(parents=True)
    victim = tmp_path / "victim.img"
    content = b"precious" * 4096
    victim.write_bytes(content)
    (planted / "vss" / "ext4.img").symlink_to(victim)
    for path in (planted, planted / "vss"):
        os.chown(path, NOBODY, NOBODY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.getcwd()
    proc = subprocess.run(
        [sys.executable, "-m", "hvguest.sim.cli", "demo", "--workdir", str(planted)],
        capture_output=True, text=True, timeout=600, cwd=os.getcwd(), env=env,
        stdin=subprocess.DEVNULL,
    )
    assert victim.read_bytes() == content, "the symlink's target was written"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "--workdir" in proc.stderr and "must not exist" in proc.stderr, proc.stderr


def test_fresh_workdir_is_private(tmp_path):
    from hvguest.sim.demo import make_workdir

    made = make_workdir(str(tmp_path / "new"))
    st = os.lstat(made)
    assert st.st_mode & 0o777 == 0o700 and st.st_uid == os.geteuid()
