"""The UIO fcopy path (kernels >= 6.10): hvguest-fcopyd against the upstream
hv_fcopy_uio_daemon, each behind its own simulated uio_hv_generic channel and host.

The oracle is built by scripts/setup from Debian's linux-source-6.12 (see
tests/sim/test_reference_fcopy.py); a missing oracle fails, it does not skip.
Host-visible statuses and the resulting files are compared. Every case where
hvguest deliberately differs names the reason and asserts both sides; every case
where they agree also asserts the expected status, so two failing daemons do not
count as agreement. Allowed differences:

* mode: hvguest creates 0644 (``fcopy.file_mode``); upstream opens with 0744;
* names: upstream turns a UTF-16 code unit >= 0x80 into ``X`` and its conversion
  steps through the name at two different speeds, so the rest of a non-ASCII name
  is garbage (seen: ``Привет 🎉.txt`` -> ``XXXXXX\x1fX@825B <\x89.txt``); hvguest
  keeps the name (decoded strictly);
* CREATE_PATH: upstream never creates the last component of the path unless it
  ends with ``/``; hvguest creates the whole chain;
* paths outside the allowed roots: refused by hvguest, written by upstream;
* CANCEL: upstream does not implement it (HV_E_FAIL) and keeps the partial file;
  hvguest answers HV_S_OK and leaves nothing;
* COMPLETE with no transfer: upstream answers HV_S_OK (it closes whatever
  descriptor it holds); hvguest refuses it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
from test_reference_fcopy import uio_reference

from hvguest.sim.client import SimClient
from hvguest.wire.fcopy import (
    CREATE_PATH,
    OVER_WRITE,
    FcopyComplete,
)
from hvguest.wire.status import HvStatus

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.reference, pytest.mark.system]

OK = HvStatus.HV_S_OK
FAIL = HvStatus.HV_E_FAIL
EXISTS = HvStatus.HV_ERROR_ALREADY_EXISTS
HVGUEST = [sys.executable, "-m", "hvguest.daemons.fcopyd", "--log-target", "stderr"]




# -- scenarios ---------------------------------------------------------------------------


def plain_copy(sim: SimClient, w: str) -> Outcome:
    # 40 fragments of 6 KiB: the 16 KiB ring wraps many times.
    st = sim.fcopy_send(src(w, pattern(40 * 6144 + 123)), "/tmp", "plain.bin")
    return Outcome([st], look(sim, "/tmp/plain.bin"), sim.transcript()[0]["fields"])


def missing_dir_without_create_path(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, b"x"), "/tmp/nowhere", "f", 0)
    return Outcome([st], look(sim, "/tmp/nowhere/f"))


def create_path_trailing_slash(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, b"deep"), "/tmp/made/", "f", CREATE_PATH)
    return Outcome([st], look(sim, "/tmp/made/f"))


def create_path_chain(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, b"deeper"), "/tmp/a/b/c", "f", CREATE_PATH)
    return Outcome([st], look(sim, "/tmp/a/b/c/f"))


UNICODE = "Привет 🎉.txt"


def unicode_name(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, b"unicode"), "/tmp", UNICODE)
    out = Outcome([st], look(sim, f"/tmp/{UNICODE}"))
    # Upstream's name: whatever file beginning with one X per leading Cyrillic letter.
    for raw in os.listdir(os.fsencode(f"{sim.root}/tmp")):
        if raw.startswith(b"XXXXXX"):
            with open(os.path.join(os.fsencode(f"{sim.root}/tmp"), raw), "rb") as f:
                out.files["mangled"] = (raw, f.read())
    return out


def outside_roots(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, b"x"), "/etc", "hvguest-test", OVER_WRITE)
    return Outcome([st], look(sim, "/etc/hvguest-test"))


def cancel_mid_transfer(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_send(src(w, pattern(60_000, 2)), "/tmp", "cancelled", 0,
                        cancel_after_bytes=12_288)
    return Outcome([st], look(sim, "/tmp/cancelled"))


def complete_without_start(sim: SimClient, w: str) -> Outcome:
    st = sim.fcopy_raw(FcopyComplete().encode(utf16=True))
    after = sim.fcopy_send(src(w, b"after"), "/tmp", "after")
    return Outcome([st, after], look(sim, "/tmp/after"))


def _irregular(name: str) -> Scenario:
    def scenario(sim: SimClient, w: str) -> Outcome:
        data, _ = irregular_contents(name)
        statuses = raw_copy(sim, "/tmp", name, data, IRREGULAR[name][1], utf16=True)
        return Outcome(statuses, look(sim, f"/tmp/{name}"))

    return scenario


def _whole_file(name: str) -> Callable[[Outcome], None]:
    """The file holds exactly the data (holes read as zeros where nothing was sent)."""
    _, expected = irregular_contents(name)

    def check(out: Outcome) -> None:
        got = out.files[f"/tmp/{name}"]
        assert got is not None and got[0] == expected, name

    return check


# -- expectations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    scenario: Scenario
    # Same statuses and contents on both sides, and these statuses (so that two
    # failures are not agreement); None when the sides differ (see ``why``).
    statuses: list[int] | None = None
    why: str = ""
    check_hvguest: Callable[[Outcome], None] | None = None
    check_reference: Callable[[Outcome], None] | None = None
    # Where both agree: what the file must hold as well.
    check_both: Callable[[Outcome], None] | None = None


def _created(out: Outcome, status: int = OK) -> None:
    assert out.statuses[-1] == status, out.statuses
    assert all(v is not None for v in out.files.values()), out.files


def _nothing(status: int) -> Callable[[Outcome], None]:
    def check(out: Outcome) -> None:
        assert out.statuses[-1] == status, out.statuses
        assert all(v is None for v in out.files.values()), out.files

    return check


def _unicode_kept(out: Outcome) -> None:
    assert out.statuses == [OK]
    assert out.files[f"/tmp/{UNICODE}"] == (b"unicode", 0o644)
    assert "mangled" not in out.files


def _unicode_mangled(out: Outcome) -> None:
    assert out.statuses == [OK]
    assert out.files[f"/tmp/{UNICODE}"] is None
    name, data = out.files["mangled"]
    assert data == b"unicode" and name.endswith(b".txt"), name


def _partial_kept(out: Outcome) -> None:
    assert out.statuses == [FAIL]  # CANCEL is not implemented upstream
    got = out.files["/tmp/cancelled"]
    assert got is not None and got[0] == pattern(60_000, 2)[: len(got[0])] and got[0]


def _complete_refused(out: Outcome) -> None:
    assert out.statuses == [FAIL, OK] and out.files["/tmp/after"] is not None


def _complete_accepted(out: Outcome) -> None:
    assert out.statuses == [OK, OK] and out.files["/tmp/after"] is not None


CASES = {
    "plain_copy": Case(plain_copy, [OK]),
    "empty_file": Case(empty_file, [OK]),
    "existing_without_overwrite": Case(existing_without_overwrite, [EXISTS]),
    "existing_with_overwrite": Case(existing_with_overwrite, [OK]),
    "missing_dir_without_create_path": Case(missing_dir_without_create_path, [FAIL]),
    "create_path_trailing_slash": Case(create_path_trailing_slash, [OK]),
    "create_path_chain": Case(
        create_path_chain, None, "CREATE_PATH: upstream skips the last component",
        check_hvguest=_created, check_reference=_nothing(FAIL)),
    "unicode_name": Case(
        unicode_name, None, "upstream mangles non-ASCII names (X, then garbage)",
        check_hvguest=_unicode_kept, check_reference=_unicode_mangled),
    "outside_roots": Case(
        outside_roots, None, "/etc is not an allowed root; upstream writes anywhere",
        check_hvguest=_nothing(FAIL), check_reference=_created),
    "cancel_mid_transfer": Case(
        cancel_mid_transfer, None, "upstream has no CANCEL and keeps the partial file",
        check_hvguest=_nothing(OK), check_reference=_partial_kept),
    "complete_without_start": Case(
        complete_without_start, None, "upstream accepts a COMPLETE with no transfer",
        check_hvguest=_complete_refused, check_reference=_complete_accepted),
}
for _name, (_size, _ranges) in IRREGULAR.items():
    CASES[_name] = Case(_irregular(_name), [OK] * (len(_ranges) + 2),
                        check_both=_whole_file(_name))


def run_all(command: list[str], workdir: str) -> dict[str, Outcome]:
    """Each scenario in a fresh simulator: upstream keeps its descriptor open across
    transfers, so one scenario must not decide the next."""
    results: dict[str, Outcome] = {}
    for name, case in CASES.items():
        scenario_dir = os.path.join(workdir, name)
        with SimClient.start(command, services=("fcopy",), fcopy="uio", network=False,
                             workdir=scenario_dir) as sim:
            results[name] = case.scenario(sim, scenario_dir)
            assert sim.daemon_alive(), f"{command[0]} died in scenario {name}"
    return results


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, dict]]:
    reference = [uio_reference(), "-n"]
    hv = run_all(HVGUEST, str(tmp_path_factory.mktemp("hvguest-uio")))
    ref = run_all(reference, str(tmp_path_factory.mktemp("upstream-uio")))
    yield hv, ref


@pytest.mark.parametrize("name", list(CASES))
def test_uio_differential(outcomes, name):
    hv, ref = outcomes
    case = CASES[name]
    out_h, out_r = hv[name], ref[name]
    if case.statuses is not None:
        assert out_h.statuses == out_r.statuses == case.statuses
        assert out_h.negotiated == out_r.negotiated
        for path, got in out_h.files.items():
            theirs = out_r.files[path]
            assert (got is None) == (theirs is None), path
            if isinstance(got, tuple):
                # Same bytes; modes differ by design: 0644 here, 0744 upstream.
                assert got[0] == theirs[0], path
                assert got[1] == 0o644 and theirs[1] & 0o100, (oct(got[1]), oct(theirs[1]))
            else:
                assert got == theirs, path
        if case.check_both is not None:
            case.check_both(out_h)
            case.check_both(out_r)
    else:
        assert case.why and case.check_hvguest and case.check_reference
        case.check_hvguest(out_h)
        case.check_reference(out_r)
