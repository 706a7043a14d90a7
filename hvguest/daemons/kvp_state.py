"""What hvguest-kvpd publishes about itself, and the one check of VSS freezes it needs."""

from __future__ import annotations

import os
import time
from typing import Any

from hvguest.errors import HvGuestError
from hvguest.paths import Paths
from hvguest.pool import PoolStore
from hvguest.vss.record import read_record, record_path
from hvguest.wire.pool import POOL_COUNT, POOL_RECORD_SIZE

# VSS freezes end within 15 min (the kernel's limit): a record older than this is
# left over from a crash long ago.
FREEZE_RECORD_MAX_AGE = 20 * 60.0


def frozen_mount(paths: Paths, path: str) -> str | None:
    """The mount point holding ``path`` if hvguest-vssd has it frozen right now."""
    try:
        st = os.stat(record_path(paths))
    except OSError:
        return None  # the usual case: one failed stat()
    if time.time() - st.st_mtime > FREEZE_RECORD_MAX_AGE:
        return None
    record = read_record(paths) or {}
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    for mount in record.get("mounts") or []:
        point = mount.get("mount_point") if isinstance(mount, dict) else None
        try:
            if isinstance(point, str) and os.stat(point).st_dev == dev:
                return point
        except OSError:
            continue
    return None


def pool_details(store: PoolStore) -> dict[str, Any]:
    """Per pool: records, bytes, path, limit (or the error), and who made the last
    lock wait give up (``hvguestctl status`` shows it)."""
    pools: dict[str, Any] = {}
    for n in range(POOL_COUNT):
        pf = store.pool(n)
        entry: dict[str, Any]
        try:
            count = pf.record_count()
            entry = {
                "records": count,
                "bytes": count * POOL_RECORD_SIZE,
                "path": pf.path,
                "max_records": pf.max_records,
            }
        except HvGuestError as exc:
            entry = {"error": str(exc), "path": pf.path}
        if pf.lock_holder is not None:
            entry["lock_holder"] = dict(pf.lock_holder)
        pools[str(n)] = entry
    return pools


def last_request(op: str, result: str, at: float, now: float) -> dict[str, str]:
    """The last request for the state file; ``at`` and ``now`` on the monotonic clock."""
    wall = time.time() - (now - at)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))
    return {"op": op, "result": result, "time": stamp}
