"""The CI smoke of scripts/fuzz, and proof that the harness cannot pass by fuzzing
nothing: a planted bug is caught with a working reproducer, a target that never gets
past its first check fails, and so does one that stops before its N cases."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "scripts" / "fuzz"
SMOKE_CASES = 2000


def fuzz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FUZZ), *args], capture_output=True, text=True, timeout=600, check=False
    )


def listed_targets() -> list[str]:
    out = fuzz("--list")
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if not line.endswith("(selftest)")]


@pytest.mark.slow
def test_smoke_runs_every_target_for_its_cases_without_failure() -> None:
    names = listed_targets()
    assert len(names) >= 40, names
    out = fuzz("--cases", str(SMOKE_CASES), "--seed", "1")
    lines = out.stdout.splitlines()
    assert lines[-1] == f"fuzz: {len(names)} targets, {SMOKE_CASES} cases each, 0 failures", (
        out.stdout[-5000:] + out.stderr[-2000:]
    )
    assert out.returncode == 0
    ran = dict(re.findall(r"^fuzz: (\w+): (\d+) cases,", out.stdout, re.M))
    assert ran == {name: str(SMOKE_CASES) for name in names}


def test_a_planted_decoder_bug_fails_the_run_with_a_reproducer() -> None:
    # VssMessage.decode wrapped with an IndexError for a THAW with flags >= 2**31
    out = fuzz("--target", "selftest_broken_decoder", "--cases", "50000", "--seed", "1")
    assert out.returncode == 1, out.stdout
    assert out.stdout.splitlines()[-1] == "fuzz: 1 targets, 50000 cases each, 1 failures"
    assert "FAIL selftest_broken_decoder: IndexError" in out.stdout
    found = re.search(r"--repro ([0-9a-f]+)$", out.stdout, re.M)
    assert found, out.stdout
    replay = fuzz("--target", "selftest_broken_decoder", "--repro", found.group(1))
    assert replay.returncode == 1 and "FAILS with IndexError" in replay.stdout
    data = bytes.fromhex(found.group(1))
    assert data[1] == 6 and data[12] >= 0x80  # raw mode, THAW, top bit of the flags


def test_a_target_that_accepts_nothing_fails() -> None:
    out = fuzz("--target", "selftest_rejects_everything", "--cases", "2000")
    assert out.returncode == 1
    assert "selftest_rejects_everything: no input accepted in 2000 cases" in out.stdout
    assert out.stdout.splitlines()[-1].endswith(" 1 failures")


def test_a_target_that_stops_before_its_cases_fails() -> None:
    out = fuzz("--target", "selftest_stops_early", "--cases", "2000")
    assert out.returncode == 1
    assert "FAIL selftest_stops_early: ran at least 64 of 2000 cases" in out.stdout
    assert out.stdout.splitlines()[-1].endswith(" 1 failures")
