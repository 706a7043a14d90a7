"""<run>/vss-frozen.json: what hvguest is about to freeze, for an emergency thaw.

Written before the first FIFREEZE (never while anything is frozen) and removed
after the last FITHAW, so ``hvguestctl vss thaw`` (also the unit's ExecStopPost)
knows which filesystems to thaw if the daemon and its guard both died.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from hvguest.paths import Paths

RECORD_NAME = "vss-frozen.json"


def record_path(paths: Paths) -> str:
    return os.path.join(paths.run, RECORD_NAME)


def write_record(paths: Paths, doc: dict[str, Any]) -> None:
    # Imported here: the emergency thaw, which may run while the filesystem holding
    # this package is frozen, loads only what it needs (read and clear).
    from hvguest.files import atomic_write

    # 0600 and synced: it names what is frozen, and a crash must leave it whole.
    atomic_write(record_path(paths), json.dumps(doc, indent=2) + "\n", mode=0o600, fsync=True)


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
