"""scripts/fuzz: run fuzz targets, each for exactly N cases, and report.

    scripts/fuzz [--cases N] [--target NAME ...] [--jobs J] [--seed S]
    scripts/fuzz --target NAME --repro HEX     # replay one input, show the traceback
    scripts/fuzz --list

Each target runs in a forked child under atheris (coverage-guided libFuzzer), with the
hvguest package instrumented. The last line is always
``fuzz: T targets, N cases each, F failures``; the exit status is 1 when F > 0.
A failure is: an exception a target let escape (each distinct one, with the input
in hex as reproducer), a target that did not run all N cases, or one that in 1000 or
more cases never got an input accepted (it would be fuzzing nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import atheris

# The project and the targets' own branches (which message kind, which state) guide
# libFuzzer; the engine and the helpers do not.
INSTRUMENTED = ["hvguest", "fuzz.targets", "fuzz.targets_wire", "fuzz.targets_ring",
                "fuzz.targets_roles"]
with contextlib.redirect_stderr(io.StringIO()), atheris.instrument_imports(include=INSTRUMENTED):
    from .engine import SUMMARY, run_case, run_child
    from .harness import Target
    from .targets import TARGETS

MUST_ACCEPT_AFTER = 1000
logging.disable(logging.CRITICAL)  # the roles' warnings, once per case, only cost time


def _problems(target: Target, cases: int, workdir: Path, status: int) -> list[str]:
    """What went wrong in one child: lines to print, one per failure."""
    path = workdir / SUMMARY
    stats: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    problems = []
    for sig, failure in stats.get("failures", {}).items():
        problems.append(
            f"FAIL {target.name}: {sig}: {failure['error']}\n"
            + "".join(f"    {line}\n" for line in failure["traceback"].splitlines()[-6:])
            + f"  reproducer: scripts/fuzz --target {target.name}"
            + f" --repro {shlex.quote(failure['hex'])}"
        )
    done = stats.get("cases", 0)
    if not stats.get("complete") or done != cases:
        artifacts = sorted(workdir.glob("*-*"))
        found = [a for a in artifacts if a.name.split("-")[0] in ("crash", "timeout", "oom")]
        extra = "".join(
            f"\n  {a.name.split('-')[0]} input: scripts/fuzz --target {target.name}"
            f" --repro {shlex.quote(a.read_bytes().hex())}"
            for a in found
        )
        log = (workdir / "engine.log").read_text(errors="replace").splitlines()[-5:]
        problems.append(
            f"FAIL {target.name}: ran {'at least ' if done else ''}{done} of {cases} cases"
            f" (child exit status {status})" + extra
            + "".join(f"\n    {line}" for line in log)
        )
    elif target.must_accept and cases >= MUST_ACCEPT_AFTER and not stats.get("accepted"):
        problems.append(
            f"FAIL {target.name}: no input accepted in {cases} cases: it fuzzes nothing"
        )
    return problems


def _line(target: Target, workdir: Path, seconds: float) -> str:
    path = workdir / SUMMARY
    stats = json.loads(path.read_text()) if path.exists() else {}
    return (
        f"fuzz: {target.name}: {stats.get('cases', 0)} cases, {stats.get('accepted', 0)}"
        f" accepted, {stats.get('rejected', 0)} refused, {len(stats.get('failures', {}))}"
        f" failing ({seconds:.1f} s)"
    )


def run(targets: list[Target], cases: int, jobs: int, seed: int) -> int:
    base = Path(tempfile.mkdtemp(prefix="hvguest-fuzz-"))
    queue = list(enumerate(targets))
    running: dict[int, tuple[Target, Path, float]] = {}
    failures = 0
    sys.stdout.flush()
    try:
        while queue or running:
            while queue and len(running) < jobs:
                i, target = queue.pop(0)
                workdir = base / target.name
                workdir.mkdir()
                pid = os.fork()
                if pid == 0:
                    try:
                        run_child(target, cases, workdir, seed + i if seed else 0)
                    finally:
                        os._exit(70)
                running[pid] = (target, workdir, time.monotonic())
            pid, wstatus = os.wait()
            target, workdir, started = running.pop(pid)
            print(_line(target, workdir, time.monotonic() - started), flush=True)
            problems = _problems(target, cases, workdir, os.waitstatus_to_exitcode(wstatus))
            for problem in problems:
                print(problem, flush=True)
            failures += len(problems)
    finally:
        for pid in running:
            os.kill(pid, 9)
        shutil.rmtree(base, ignore_errors=True)
    return failures


def repro(target: Target, hex_input: str) -> int:
    data = bytes.fromhex(hex_input)
    accepted, exc = run_case(target, data)
    if exc is None:
        print(f"fuzz: {target.name}: {len(data)} bytes {'accepted' if accepted else 'refused'}")
        return 0
    traceback.print_exception(exc)
    print(f"fuzz: {target.name}: FAILS with {type(exc).__name__}: {exc}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases per target")
    parser.add_argument("--target", action="append", help="target name (repeatable)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer seed (0: random)")
    parser.add_argument("--repro", metavar="HEX", help="replay one input of --target")
    parser.add_argument("--list", action="store_true", help="list the targets")
    args = parser.parse_args(argv)
    if args.list:
        for name, t in TARGETS.items():
            print(name + (" (selftest)" if t.selftest else ""))
        return 0
    names = args.target or [n for n, t in TARGETS.items() if not t.selftest]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; see --list")
    if args.repro is not None:
        if len(names) != 1:
            parser.error("--repro needs exactly one --target")
        return repro(TARGETS[names[0]], args.repro)
    if args.cases < 1 or args.jobs < 1:
        parser.error("--cases and --jobs must be at least 1")
    started = time.monotonic()
    failures = run([TARGETS[n] for n in names], args.cases, args.jobs, args.seed)
    print(f"fuzz: wall time {time.monotonic() - started:.0f} s", flush=True)
    print(f"fuzz: {len(names)} targets, {args.cases} cases each, {failures} failures", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
