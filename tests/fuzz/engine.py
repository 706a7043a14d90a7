"""One target under atheris (libFuzzer), in a forked child.

The child counts the cases itself and ends when it has run exactly ``cases`` of them,
writing a JSON summary; a child that ends without a complete summary (libFuzzer gave
up, a timeout, a crash of the interpreter) is a failure the parent reports, with the
input libFuzzer saved as its artifact.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import atheris

from .harness import Target

SUMMARY = "summary.json"
MAX_FAILURES = 20  # distinct failures kept per target


def failure_signature(exc: BaseException) -> str:
    """Type and innermost project frame: one bug found by many inputs counts once."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/hvguest/" in f.filename or "/fuzz/" in f.filename]
    frame = (ours or frames or [None])[-1]
    where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
    return f"{type(exc).__name__} at {where}"


def run_case(target: Target, data: bytes) -> tuple[bool | None, BaseException | None]:
    """(accepted, None), or (None, the exception that is a failure)."""
    try:
        return bool(target.fn(data)), None
    except Exception as exc:  # everything a target lets escape is a failure
        return None, exc


def run_child(target: Target, cases: int, workdir: Path, seed: int) -> NoReturn:
    log = os.open(workdir / "engine.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    corpus = workdir / "corpus"
    corpus.mkdir()
    for i, seed_input in enumerate(target.seeds):
        (corpus / f"seed-{i}").write_bytes(seed_input)
    stats: dict[str, Any] = {"cases": 0, "accepted": 0, "rejected": 0, "failures": {}}

    def dump(complete: bool = False) -> None:
        stats["complete"] = complete
        tmp = workdir / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.rename(workdir / SUMMARY)

    def one(data: bytes) -> None:
        stats["cases"] += 1
        accepted, exc = run_case(target, data)
        if exc is not None:
            sig = failure_signature(exc)
            failures = stats["failures"]
            known = failures.get(sig)
            if (known is None and len(failures) < MAX_FAILURES) or (
                known is not None and len(data) * 2 < len(known["hex"])
            ):
                failures[sig] = {
                    "hex": data.hex(),
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                    "traceback": "".join(traceback.format_exception(exc))[-3000:],
                }
        elif accepted:
            stats["accepted"] += 1
        else:
            stats["rejected"] += 1
        n = stats["cases"]
        if n >= cases:
            dump(complete=True)
            sys.stdout.flush()
            os._exit(0)
        if n & (n - 1) == 0 or n % 8192 == 0:  # progress, for a child that dies early
            dump()

    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_len={target.max_len}",
        "-len_control=0",
        f"-seed={seed}",
        "-timeout=60",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={workdir}/",
        "-print_final_stats=0",
    ]
    atheris.Setup(argv, one)
    atheris.Fuzz()
    dump()  # libFuzzer stopped on its own: the summary shows how far it got
    os._exit(0)
