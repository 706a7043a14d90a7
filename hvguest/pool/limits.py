"""Limits and errors of the KVP pool files: record sizes, host-safe sizes, defaults."""

from __future__ import annotations

from hvguest.errors import HvGuestError, LocalUsageError
from hvguest.wire.pool import POOL_KEY_SIZE, POOL_VALUE_SIZE

# Limits for items the host must be able to read back: the kernel cuts enumerated keys
# at 254 and values at 1022 UTF-16 code units, and the host's Data field holds 1024.
HOST_SAFE_KEY_BYTES = 254
HOST_SAFE_VALUE_BYTES = 1022
# What a record can hold at all (field size minus the NUL).
MAX_KEY_BYTES = POOL_KEY_SIZE - 1
MAX_VALUE_BYTES = POOL_VALUE_SIZE - 1

LOCK_TIMEOUT = 5.0
# Far above what the pool's users write: cloud-init's Hyper-V reporting appends a few
# hundred records per boot to pool 1 (and truncates it once per boot), azure-init at
# most 1024 keys, the host a handful in pool 0. 10,000 records are 25.6 MB of disk.
DEFAULT_MAX_RECORDS = 10_000
PATH_CHECK_PERIOD = 1.0
RACY_NS = 50_000_000  # far above any filesystem timestamp tick (jiffies)
OWN_PREFIX = "hvguest."


class PoolBusyError(HvGuestError):
    """A pool file stayed locked by another writer for longer than the bounded wait."""


class PoolFullError(HvGuestError):
    """A new key would take the pool past its record limit."""


class PoolRecordError(HvGuestError):
    """A record another writer left on disk cannot be decoded (e.g. invalid UTF-8)."""


def check_item(key: str, value: str, *, pool: int, unsafe: bool = False) -> tuple[bytes, bytes]:
    """UTF-8 bytes of ``key`` and ``value``; LocalUsageError naming size and limit.

    Host-safe limits by default (254/1022 bytes); ``unsafe`` allows what a record can
    hold (511/2047), which the host will see truncated.
    """
    key_limit = MAX_KEY_BYTES if unsafe else HOST_SAFE_KEY_BYTES
    value_limit = MAX_VALUE_BYTES if unsafe else HOST_SAFE_VALUE_BYTES
    if type(key) is str and type(value) is str:  # every host SET: no loop, no list
        try:
            raw_key, raw_value = key.encode("utf-8"), value.encode("utf-8")
        except UnicodeEncodeError:
            raw_key = raw_value = b""  # the checks below name the field
        if (
            0 < len(raw_key) <= key_limit
            and len(raw_value) <= value_limit
            and b"\0" not in raw_key
            and b"\0" not in raw_value
        ):
            return raw_key, raw_value
    out = []
    for what, text, limit in (("key", key, key_limit), ("value", value, value_limit)):
        if not isinstance(text, str):
            raise LocalUsageError(
                f"KVP {what} must be text, got {type(text).__name__} (pool {pool})"
            )
        if "\0" in text:
            raise LocalUsageError(f"KVP {what} contains a NUL character (pool {pool})")
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LocalUsageError(
                f"KVP {what} is not valid UTF-8: lone surrogate at character {exc.start}"
                f" (pool {pool})"
            ) from exc
        if len(raw) > limit:
            hard = MAX_KEY_BYTES if what == "key" else MAX_VALUE_BYTES
            hint = ""
            if not unsafe and len(raw) <= hard:
                hint = "; the host would see it cut (--unsafe or kvp.unsafe_sizes allow it)"
            raise LocalUsageError(
                f"KVP {what} is {len(raw)} bytes, limit {limit} (pool {pool}){hint}"
            )
        out.append(raw)
    if not out[0]:
        raise LocalUsageError(f"KVP key is empty (pool {pool})")
    return out[0], out[1]
