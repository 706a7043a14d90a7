"""Raw record I/O on a pool file: whole records read in chunks, written whole."""

from __future__ import annotations

import os

from hvguest.errors import LocalUsageError
from hvguest.wire.pool import POOL_KEY_SIZE, POOL_RECORD_SIZE

# What tells one version of a file from another: (st_ino, st_size, st_mtime_ns). A plain
# tuple: it is built and compared on every request.
Signature = tuple[int, int, int]


def signature(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# 48 records (122,880 bytes) per read: below glibc's mmap threshold, so reloading a
# large pool reuses the same heap memory instead of leaving megabytes resident.
_READ_RECORDS = 48


def read_records(fd: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """Every whole record (fields cut at their first NUL, whole if they have none),
    and the size of a trailing partial record."""
    records = []
    offset = 0
    chunk_size = _READ_RECORDS * POOL_RECORD_SIZE
    while True:
        data = os.pread(fd, chunk_size, offset)
        whole = len(data) - len(data) % POOL_RECORD_SIZE
        find = data.find
        for base in range(0, whole, POOL_RECORD_SIZE):
            mid = base + POOL_KEY_SIZE
            end = base + POOL_RECORD_SIZE
            kend = find(b"\0", base, mid)
            vend = find(b"\0", mid, end)
            records.append(
                (data[base : kend if kend >= 0 else mid], data[mid : vend if vend >= 0 else end])
            )
        offset += len(data)
        if len(data) < chunk_size:
            return records, len(data) - whole


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    try:
        written = os.pwrite(fd, data, offset)
    except OSError as exc:
        raise LocalUsageError(
            f"cannot write KVP pool record at offset {offset}: {exc.strerror}"
        ) from exc
    if written != len(data):  # pragma: no cover - regular files write fully unless killed
        raise LocalUsageError(
            f"short write of KVP pool record at offset {offset}: {written} of {len(data)}"
        )
