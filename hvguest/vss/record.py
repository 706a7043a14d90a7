"""<run>/vss-frozen.json: what hvguest is about to freeze, for an emergency thaw.

Written before the first FIFREEZE (never while anything is frozen) and removed
after the last FITHAW, so ``hvguestctl vss thaw`` (also the unit's ExecStopPost)
knows which filesystems to thaw if the daemon and its guard both died.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

from hvguest.paths import Paths

RECORD_NAME = "vss-frozen.json"


def record_path(paths: Paths) -> str:
    return os.path.join(paths.run, RECORD_NAME)


def write_record(paths: Paths, doc: dict[str, Any]) -> None:
    os.makedirs(paths.run, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".vss", suffix=".tmp", dir=paths.run)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, record_path(paths))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_record(paths: Paths) -> dict[str, Any] | None:
    try:
        with open(record_path(paths), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def clear_record(paths: Paths) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(paths))
