"""The legacy fcopy path: hvguest-fcopyd against the reference hv_fcopy_daemon.

Every scenario runs against both daemons, each behind its own simulated kernel and
host; the host-visible statuses and the resulting files are compared. Where hvguest
deliberately differs, the scenario says so and asserts both sides:

* mode: received files are 0644 (configurable); the reference creates 0744 (minus umask);
* CREATE_PATH creates the whole missing chain; the reference skips the last component,
  so a copy into a new directory fails there;
* path refusals: a relative path, ``..`` or a path outside the allowed roots is refused
  (HV_E_FAIL); the reference writes wherever the joined path leads;
* an incomplete or abandoned transfer leaves nothing behind: the reference keeps the
  partial file when a WRITE failed (disk full) or COMPLETE comes before the data
  reached ``file_size`` and the host does not cancel; both remove it on CANCEL.

Resent fragments, gaps (holes), fragments out of order and zero-length WRITEs
inside ``file_size`` give the same file and the same statuses from both.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fcopy_scenarios import (
    IRREGULAR,
    Outcome,
    Scenario,
    empty_file,
    existing_with_overwrite,
    existing_without_overwrite,
    irregular_contents,
    look,
    pattern,
    raw_copy,
    src,
)

from hvguest.sim.client import SimClient
from hvguest.wire.fcopy import (
    CREATE_PATH,
    DATA_FRAGMENT,
    OVER_WRITE,
    FcopyStart,
    FcopyWrite,
)
from hvguest.wire.status import HvStatus

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.reference, pytest.mark.system]

OK = HvStatus.HV_S_OK
FAIL = HvStatus.HV_E_FAIL
EXISTS = HvStatus.HV_ERROR_ALREADY_EXISTS
DISK_FULL = HvStatus.HV_ERROR_DISK_FULL
F = DATA_FRAGMENT

HVGUEST = [sys.executable, "-m", "hvguest.daemons.fcopyd", "--log-target", "stderr"]
REFERENCE = ["/usr/sbin/hv_fcopy_daemon", "-n"]




def wait_registered(sim: SimClient) -> None:
    """The kernel fails every request until the daemon registered (legacy) or opened
    /dev/uio0 (UIO)."""
    if not sim.call("wait_registered"):
        raise AssertionError(f"the fcopy daemon did not register: {sim.state()}")


# -- scenarios ---------------------------------------------------------------------


def plain_copy(sim: SimClient, w: str) -> Outcome:
    data = pattern(100_000)
    st = sim.fcopy_send(src(w, data), "/tmp", "plain.bin")
    return Outcome([st], look(sim, "/tmp/plain.bin"))


def unicode_names(sim: SimClient, w: str) -> Outcome:
    sim.exec(["mkdir", "-p", "/tmp/Ünï 目录"])
    st = sim.fcopy_send(src(w, b"unicode"), "/tmp/Ünï 目录", "Привет 数据 🎉.txt")
    return Outcome([st], look(sim, "/tmp/Ünï 目录/Привет 数据 🎉.txt"))


def create_path_one_level(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, b"deep"), "/tmp/newdir", "f", CREATE_PATH)
    return Outcome([st], look(sim, "/tmp/newdir/f"))


def create_path_chain(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, b"deeper"), "/tmp/a/b/c", "f", CREATE_PATH)
    return Outcome([st], look(sim, "/tmp/a/b/c/f"))


def traversal(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, b"pwned\n"), "/tmp/../etc", "hvguest-test", OVER_WRITE)
    return Outcome([st], look(sim, "/etc/hvguest-test"))


def outside_roots(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, b"x"), "/etc", "hvguest-test2", OVER_WRITE)
    return Outcome([st], look(sim, "/etc/hvguest-test2"))


def cancel_mid_transfer(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(
        src(w, pattern(60_000, 2)), "/tmp", "cancelled", 0, cancel_after_bytes=12_288
    )
    return Outcome([st], look(sim, "/tmp/cancelled"))


def start_twice(sim: SimClient, w: str) -> Outcome:
    statuses = [
        sim.fcopy_raw(FcopyStart("first", "/tmp", 0, 4).encode()),
        sim.fcopy_raw(FcopyWrite(0, b"1111").encode()),
    ]
    st = sim.fcopy_send(src(w, b"second"), "/tmp", "second")
    return Outcome(statuses + [st], look(sim, "/tmp/second"))


def _irregular(name: str) -> Scenario:
    def scenario(sim: SimClient, w: str) -> Outcome:
        data, _ = irregular_contents(name)
        statuses = raw_copy(sim, "/tmp", name, data, IRREGULAR[name][1])
        return Outcome(statuses, look(sim, f"/tmp/{name}"))

    scenario.__name__ = name
    return scenario


def complete_short(sim: SimClient, w: str) -> Outcome:
    statuses = raw_copy(sim, "/tmp", "short", pattern(3 * F, 5), [(0, F), (F, 2 * F)])
    return Outcome(statuses, look(sim, "/tmp/short"))


def failed_write_then_complete(sim: SimClient, w: str) -> Outcome:
    """A WRITE fails (a 64 KiB filesystem fills up) and the host sends COMPLETE
    instead of CANCEL."""
    for cmd in (
        ["mkdir", "/tmp/small"],
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "hvguest-small", "/tmp/small"],
    ):
        r = sim.exec(cmd)
        assert r.returncode == 0, (cmd, r.stderr)
    data = pattern(40 * F, 6)
    statuses = raw_copy(sim, "/tmp/small", "full", data, [(o, o + F) for o in range(0, 40 * F, F)])
    return Outcome(statuses, look(sim, "/tmp/small/full"))


@dataclass(frozen=True)
class Case:
    scenario: Scenario
    # None: both sides must match exactly. Otherwise why they differ, and checks of
    # each side.
    differs: str | None = None
    check_hvguest: Callable[[Outcome], None] | None = None
    check_reference: Callable[[Outcome], None] | None = None
    # For cases where both must match: what both must have done.
    expect: Callable[[Outcome], None] | None = None


def _mode_only(out_h: Outcome, out_r: Outcome) -> None:
    """Both succeed with the same statuses and contents; modes are 0644 (hvguest) and
    0744 (reference)."""
    assert out_h.statuses == out_r.statuses
    assert all(s == OK for s in out_h.statuses), [hex(s) for s in out_h.statuses]
    assert out_h.files and all(v is not None for v in out_h.files.values()), out_h.files
    for path, got in out_h.files.items():
        ref = out_r.files[path]
        assert (got is None) == (ref is None), path
        if got is not None:
            assert got[0] == ref[0], path
            assert got[1] == 0o644
            assert ref[1] & 0o100, f"reference mode {ref[1]:o}: expected the 0744 family"


def _created(out: Outcome, status: int = OK) -> None:
    assert out.statuses[-1] == status and all(v is not None for v in out.files.values())


def _nothing(status: int) -> Callable[[Outcome], None]:
    def check(out: Outcome) -> None:
        assert out.statuses[-1] == status and all(v is None for v in out.files.values())

    return check


def _statuses_and_files(statuses: list[int], files: dict[str, Any]) -> Callable[[Outcome], None]:
    def check(out: Outcome) -> None:
        assert out.statuses == statuses and out.files == files, out

    return check


def _partial_kept(out: Outcome) -> None:
    """The reference answers every step but the failed WRITE with HV_S_OK and keeps
    what it wrote."""
    assert DISK_FULL in out.statuses and out.statuses[-1] == OK, out.statuses
    [got] = out.files.values()
    assert got is not None and 0 < len(got[0]) < 40 * F


def _failed_nothing_left(out: Outcome) -> None:
    assert DISK_FULL in out.statuses and out.statuses[-1] == DISK_FULL, out.statuses
    assert all(v is None for v in out.files.values())


CASES = {
    "plain_copy": Case(plain_copy, "mode"),
    "unicode_names": Case(unicode_names, "mode"),
    "empty_file": Case(empty_file, "mode"),
    "existing_without_overwrite": Case(
        existing_without_overwrite,
        expect=_statuses_and_files([EXISTS], {"/tmp/exists": b"old"}),
    ),
    "existing_with_overwrite": Case(
        existing_with_overwrite,
        expect=_statuses_and_files([OK], {"/tmp/exists2": b"new contents"}),
    ),
    "start_twice": Case(start_twice, "mode"),
    "complete_short": Case(
        complete_short,
        "COMPLETE before the data reached file_size: hvguest fails it and keeps nothing; "
        "the reference answers HV_S_OK and keeps the short file",
        check_hvguest=_nothing(FAIL),
        check_reference=_created,
    ),
    "failed_write_then_complete": Case(
        failed_write_then_complete,
        "a failed WRITE: hvguest repeats its status on COMPLETE and keeps nothing; the "
        "reference answers COMPLETE with HV_S_OK and keeps the partial file",
        check_hvguest=_failed_nothing_left,
        check_reference=_partial_kept,
    ),
    "create_path_one_level": Case(
        create_path_one_level,
        "CREATE_PATH: the reference never creates the last component of path_name",
        check_hvguest=_created,
        check_reference=_nothing(FAIL),
    ),
    "create_path_chain": Case(
        create_path_chain,
        "CREATE_PATH: hvguest creates the whole chain",
        check_hvguest=_created,
        check_reference=_nothing(FAIL),
    ),
    "traversal": Case(
        traversal,
        "'..' is refused by hvguest; the reference writes into /etc (inside the sandbox)",
        check_hvguest=_nothing(FAIL),
        check_reference=_created,
    ),
    "outside_roots": Case(
        outside_roots,
        "/etc is not an allowed root for hvguest; the reference writes anywhere",
        check_hvguest=_nothing(FAIL),
        check_reference=_created,
    ),
    "cancel_mid_transfer": Case(
        cancel_mid_transfer, expect=_statuses_and_files([OK], {"/tmp/cancelled": None})
    ),
}
# Resends, gaps, out-of-order and zero-length WRITEs: both succeed with the same data.
for _name in IRREGULAR:
    CASES[_name] = Case(_irregular(_name), "mode")


def run_all(command: list[str], workdir: str) -> dict[str, Outcome]:
    """Each scenario in a fresh simulator: the reference's state after one scenario
    (leaked or stale descriptors) must not decide the next one."""
    results: dict[str, Outcome] = {}
    for name, case in CASES.items():
        scenario_dir = os.path.join(workdir, name)
        with SimClient.start(
            command, services=("fcopy",), fcopy="legacy", workdir=scenario_dir
        ) as sim:
            wait_registered(sim)
            results[name] = case.scenario(sim, scenario_dir)
            assert sim.daemon_alive(), f"{command[0]} died in scenario {name}"
    return results


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, dict]]:
    hv = run_all(HVGUEST, str(tmp_path_factory.mktemp("hvguest")))
    ref = run_all(REFERENCE, str(tmp_path_factory.mktemp("reference")))
    yield hv, ref


@pytest.mark.parametrize("name", list(CASES))
def test_differential(outcomes, name):
    hv, ref = outcomes
    case = CASES[name]
    out_h, out_r = hv[name], ref[name]
    if case.differs is None:
        assert case.expect is not None, "a case where both must match says what they did"
        case.expect(out_h)
        assert out_h.statuses == out_r.statuses
        assert out_h.files == out_r.files
    elif case.differs == "mode":
        _mode_only(out_h, out_r)
    else:
        assert case.check_hvguest is not None and case.check_reference is not None
        case.check_hvguest(out_h)
        case.check_reference(out_r)


@pytest.mark.parametrize("name", list(IRREGULAR))
def test_irregular_writes_land_at_their_offsets(outcomes, name):
    """Equal is not enough: both files hold exactly what was sent, holes as zeros."""
    _, expected = irregular_contents(name)
    for side in outcomes:
        got = side[name].files[f"/tmp/{name}"]
        assert got is not None and got[0] == expected, name
