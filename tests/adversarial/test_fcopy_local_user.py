"""A local user against fcopy, with real files: the attacker's steps run as uid 65534
(``setpriv``), then root's writer receives a copy the way hvguest-fcopyd does (policy
walk, temporary file, commit). Nothing may land in, through or over anything the
attacker controls, and the attacker's own files stay as they were.

Two allowed roots, as in the default configuration: a ``/tmp``-like one (root-owned,
1777) and an ``incoming`` one (root-owned, 0755). They live in a private directory
under /tmp that uid 65534 can traverse; the machine's own /tmp and /var/lib are not
touched.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from hvguest.daemons.fcopy_service import FcopyService
from hvguest.fcopy.policy import PathPolicy, TransferRefused
from hvguest.fcopy.settings import FcopySettings
from hvguest.fcopy.writer import TEMP_PREFIX, FileWriter, sweep_stale
from hvguest.wire.fcopy import CREATE_PATH, OVER_WRITE, FcopyStart
from hvguest.wire.status import HvStatus

pytestmark = [pytest.mark.root]

NOBODY = 65534
PAYLOAD = b"root-owned payload\n"


def as_nobody(*cmd: str) -> None:
    """One attacker step, run as uid/gid 65534 with no supplementary groups."""
    subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd],
        check=True,
        capture_output=True,
    )


@dataclass
class Roots:
    base: str
    shared: str  # /tmp-like: root-owned, sticky, world-writable
    incoming: str  # /var/lib/hvguest/incoming-like: root-owned 0755
    victim: str  # a root file outside every root that links may point at

    def policy(self) -> PathPolicy:
        return PathPolicy([self.shared, self.incoming])


@pytest.fixture
def roots() -> Iterator[Roots]:
    base = tempfile.mkdtemp(prefix="hvguest-adv-fcopy-", dir="/tmp")
    os.chmod(base, 0o755)
    shared = os.path.join(base, "tmp")
    incoming = os.path.join(base, "incoming")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    os.mkdir(incoming, 0o755)
    outside = os.path.join(base, "outside")
    os.mkdir(outside, 0o755)
    victim = os.path.join(outside, "victim")
    with open(victim, "wb") as f:
        f.write(b"keep me\n")
    try:
        yield Roots(base, shared, incoming, victim)
    finally:
        shutil.rmtree(base)


def snapshot(top: str) -> dict[str, tuple[int, int, int, bytes | str | None]]:
    """Every entry below ``top``: (uid, mode, size, contents or link target)."""
    out: dict[str, tuple[int, int, int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            body: bytes | str | None = None
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    body = f.read()
            out[path] = (st.st_uid, st.st_mode, st.st_size, body)
    return out


def copy(roots: Roots, directory: str, name: str, *, overwrite: bool = True) -> None:
    """What hvguest-fcopyd's writer does for START + WRITE + COMPLETE (CREATE_PATH)."""
    writer = FileWriter(roots.policy())
    writer.open(directory, name, overwrite=overwrite, create_path=True)
    writer.write(0, PAYLOAD)
    writer.commit()


# -- the attacks: each plants, then names the directory and file the host copies to ----

Attack = Callable[[Roots], tuple[str, str]]


def own_dir_in_shared_root(r: Roots) -> tuple[str, str]:
    as_nobody("mkdir", f"{r.shared}/deploy")
    return f"{r.shared}/deploy", "run.sh"


def own_dir_0777_in_shared_root(r: Roots) -> tuple[str, str]:
    as_nobody("mkdir", "-m", "0777", f"{r.shared}/deploy")
    return f"{r.shared}/deploy", "run.sh"


def own_dir_deeper_with_create_path(r: Roots) -> tuple[str, str]:
    as_nobody("mkdir", f"{r.shared}/deploy")
    return f"{r.shared}/deploy/bin/x", "run.sh"


def root_dir_world_writable_no_sticky(r: Roots) -> tuple[str, str]:
    os.mkdir(f"{r.incoming}/drop")
    os.chmod(f"{r.incoming}/drop", 0o777)
    return f"{r.incoming}/drop", "run.sh"


def planted_inside_world_writable(r: Roots) -> tuple[str, str]:
    os.mkdir(f"{r.incoming}/drop")
    os.chmod(f"{r.incoming}/drop", 0o777)
    as_nobody("mkdir", f"{r.incoming}/drop/deploy")
    return f"{r.incoming}/drop/deploy", "run.sh"


def root_dir_group_writable(r: Roots) -> tuple[str, str]:
    os.mkdir(f"{r.incoming}/team")
    os.chown(f"{r.incoming}/team", 0, NOBODY)
    os.chmod(f"{r.incoming}/team", 0o775)
    return f"{r.incoming}/team", "run.sh"


def sticky_dir_below_root(r: Roots) -> tuple[str, str]:
    os.mkdir(f"{r.incoming}/scratch")
    os.chmod(f"{r.incoming}/scratch", 0o1777)
    return f"{r.incoming}/scratch", "run.sh"


def symlinked_dir_in_shared_root(r: Roots) -> tuple[str, str]:
    as_nobody("ln", "-s", os.path.dirname(r.victim), f"{r.shared}/deploy")
    return f"{r.shared}/deploy", "victim"


def symlinked_dir_in_world_writable(r: Roots) -> tuple[str, str]:
    os.mkdir(f"{r.incoming}/drop")
    os.chmod(f"{r.incoming}/drop", 0o777)
    as_nobody("ln", "-s", os.path.dirname(r.victim), f"{r.incoming}/drop/deploy")
    return f"{r.incoming}/drop/deploy", "victim"


def symlink_at_target_in_shared_root(r: Roots) -> tuple[str, str]:
    as_nobody("ln", "-s", r.victim, f"{r.shared}/report.txt")
    return r.shared, "report.txt"


def their_file_at_target_in_shared_root(r: Roots) -> tuple[str, str]:
    as_nobody("sh", "-c", f"printf mine > {r.shared}/report.txt")
    return r.shared, "report.txt"


ATTACKS: dict[str, Attack] = {
    f.__name__: f
    for f in (
        own_dir_in_shared_root,
        own_dir_0777_in_shared_root,
        own_dir_deeper_with_create_path,
        root_dir_world_writable_no_sticky,
        planted_inside_world_writable,
        root_dir_group_writable,
        sticky_dir_below_root,
        symlinked_dir_in_shared_root,
        symlinked_dir_in_world_writable,
        symlink_at_target_in_shared_root,
        their_file_at_target_in_shared_root,
    )
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_copy_into_what_a_user_controls_is_refused(roots, name):
    directory, file_name = ATTACKS[name](roots)
    before = snapshot(roots.base)
    with pytest.raises(TransferRefused) as info:
        copy(roots, directory, file_name)
    assert info.value.status == HvStatus.HV_E_FAIL
    assert snapshot(roots.base) == before, "the refused copy changed something"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_dry_run_check_refuses_too(roots, name):
    directory, file_name = ATTACKS[name](roots)
    verdict = roots.policy().check(f"{directory}/{file_name}")
    assert not verdict.allowed, verdict.reason


def test_refusal_is_recorded_and_logged_with_its_reason(roots, caplog):
    as_nobody("mkdir", f"{roots.shared}/deploy")
    service = FcopyService(FcopySettings(allowed_roots=[roots.shared, roots.incoming]))
    start = FcopyStart("run.sh", f"{roots.shared}/deploy", CREATE_PATH | OVER_WRITE, 4)
    assert service.handle(start.encode(), utf16=False) == HvStatus.HV_E_FAIL
    record = service.recent[-1]
    assert record["result"] == "HV_E_FAIL"
    assert f"{roots.shared}/deploy is owned by uid {NOBODY}" in record["detail"]
    assert any(
        r.levelname == "WARNING" and record["detail"] in r.getMessage() for r in caplog.records
    )


def test_plain_copies_with_create_path_still_work(roots):
    copy(roots, roots.shared, "direct.bin")
    copy(roots, f"{roots.shared}/new/deeper", "nested.bin")
    copy(roots, f"{roots.incoming}/a/b", "f.bin")
    for path in (
        f"{roots.shared}/direct.bin",
        f"{roots.shared}/new/deeper/nested.bin",
        f"{roots.incoming}/a/b/f.bin",
    ):
        with open(path, "rb") as f:
            assert f.read() == PAYLOAD
        assert os.lstat(path).st_uid == 0
    for made in (f"{roots.shared}/new", f"{roots.shared}/new/deeper", f"{roots.incoming}/a"):
        st = os.lstat(made)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)


def test_overwrite_of_roots_own_file_in_shared_root_still_works(roots):
    copy(roots, roots.shared, "mine.bin")
    writer = FileWriter(roots.policy())
    writer.open(roots.shared, "mine.bin", overwrite=True, create_path=True)
    writer.write(0, b"second")
    writer.commit()
    with open(f"{roots.shared}/mine.bin", "rb") as f:
        assert f.read() == b"second"


def test_file_planted_during_transfer_in_shared_root_is_not_replaced(roots):
    """The target did not exist at START; the attacker creates it before COMPLETE."""
    writer = FileWriter(roots.policy())
    writer.open(roots.shared, "late.txt", overwrite=True, create_path=True)
    writer.write(0, PAYLOAD)
    as_nobody("sh", "-c", f"printf mine > {roots.shared}/late.txt")
    with pytest.raises(TransferRefused, match="another user") as info:
        writer.commit()
    assert info.value.status == HvStatus.HV_ERROR_ALREADY_EXISTS
    with open(f"{roots.shared}/late.txt", "rb") as f:
        assert f.read() == b"mine"
    assert os.lstat(f"{roots.shared}/late.txt").st_uid == NOBODY


def test_sweep_at_start_removes_only_our_own_temporary_files(roots):
    ours = f"{roots.shared}/{TEMP_PREFIX}0123456789ab"
    with open(ours, "wb") as f:
        f.write(b"left by a crash")
    theirs = f"{roots.shared}/{TEMP_PREFIX}theirs"
    link = f"{roots.shared}/{TEMP_PREFIX}link"
    as_nobody("sh", "-c", f"printf x > {theirs}")
    as_nobody("ln", "-s", roots.victim, link)
    removed = sweep_stale(roots.policy(), [roots.shared, roots.incoming])
    assert removed == [ours]
    assert not os.path.lexists(ours)
    assert os.path.lexists(theirs) and os.path.islink(link)
    with open(roots.victim, "rb") as f:
        assert f.read() == b"keep me\n"
