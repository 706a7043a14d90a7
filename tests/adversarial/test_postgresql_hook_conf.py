"""The shipped 50-postgresql VSS hook reads $HVGUEST_ETC_DIR/postgresql.conf as
root. A file that someone else could have written, or a value that is shell
code, must never run: the hook refuses the file (and fails the freeze, so the
admin hears of it) instead of executing it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

pytestmark = [pytest.mark.root]

HOOK = os.path.join(os.path.dirname(__file__), "..", "..", "hooks", "vss.d", "50-postgresql")
NOBODY = 65534


@pytest.fixture
def etc() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="hvguest-pgconf-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _conf(etc: str, text: str, mode: int = 0o644, uid: int = 0) -> str:
    path = os.path.join(etc, "postgresql.conf")
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, uid, uid)
    os.chmod(path, mode)
    return path


def _run(etc: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HVGUEST_ETC_DIR": etc}
    return subprocess.run(
        ["/bin/sh", HOOK, "freeze"], env=env, capture_output=True, text=True, timeout=60,
        cwd="/",
    )


@pytest.mark.parametrize(
    "text",
    [
        "PG_USER=postgres; touch {marker}\n",
        "PG_TARGETS=\"/run/postgresql:5432 $(touch {marker})\"\n",
        "PG_TARGETS=`touch {marker}`\n",
        "touch {marker}\n",
    ],
)
def test_shell_code_in_the_conf_never_runs(etc: str, text: str) -> None:
    marker = os.path.join(etc, "pwned")
    _conf(etc, text.format(marker=marker))
    result = _run(etc)
    assert not os.path.exists(marker)
    assert result.returncode != 0 and "postgresql.conf" in result.stderr


@pytest.mark.parametrize(("mode", "uid"), [(0o644, NOBODY), (0o664, 0), (0o646, 0)])
def test_conf_someone_else_could_write_is_refused(etc: str, mode: int, uid: int) -> None:
    marker = os.path.join(etc, "pwned")
    _conf(etc, f"touch {marker}\nPG_TARGETS=/nonexistent:5432\n", mode, uid)
    result = _run(etc)
    assert not os.path.exists(marker)
    assert result.returncode != 0
    assert "postgresql.conf" in result.stderr and "ignored" not in result.stderr


def test_symlinked_conf_is_refused(etc: str) -> None:
    real = os.path.join(etc, "real.conf")
    with open(real, "w") as f:
        f.write("PG_TARGETS=/nonexistent:5432\n")
    os.symlink(real, os.path.join(etc, "postgresql.conf"))
    result = _run(etc)
    assert result.returncode != 0 and "postgresql.conf" in result.stderr


def test_a_proper_conf_is_used(etc: str) -> None:
    _conf(
        etc,
        "# targets\n"
        'PG_TARGETS="/nonexistent/a:5432 /nonexistent/b:5433"\n'
        "  PG_USER='postgres'\n",
    )
    result = _run(etc)
    # No server behind the sockets: nothing to checkpoint, and no complaint.
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
