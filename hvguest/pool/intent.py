"""Undoing a record rewrite that a SIGKILL cut in two.

Linux copies a write() into a regular file page by page and stops between two pages
when the writer gets a fatal signal: a 2560-byte record that crosses a 4096-byte page
boundary can be left as the new record's head and the old record's tail. Records are
rewritten in place (the format has no room for anything else), so before such a
rewrite the writer saves the old and the new record in an intent file beside the pool
(``.hvguest_kvp_intent_<pool>``, written whole in one call and checked by CRC-32).
The next writer to re-read the pool looks at the slot: if it holds exactly a head
of the new record and the rest of the old one, the cut write is undone (the
request it served was never answered). A slot that holds the old record, the new
record or anything else is left alone, so an intent that is out of date (the write
finished, or someone wrote the slot since) changes nothing; it is not even removed.

Records that cross no page boundary, and appends (a cut append leaves a partial
trailing record, which the reader cuts off), need no intent.
"""

from __future__ import annotations

import binascii
import contextlib
import errno
import os
import stat
import struct

from hvguest.wire.pool import POOL_RECORD_SIZE

PAGE = 4096
_MAGIC = b"HVGI"
_HEAD = struct.Struct("<4sIQQ")  # magic, version, inode, offset
_VERSION = 1
_SIZE = _HEAD.size + 2 * POOL_RECORD_SIZE + 4


def intent_path(pool_path: str, pool: int) -> str:
    # Not ".kvp_pool_*": tools that glob the pools must not count it.
    return os.path.join(os.path.dirname(pool_path), f".hvguest_kvp_intent_{pool}")


def page_split(offset: int) -> int | None:
    """Where in the record at ``offset`` a page boundary falls, or None if none does."""
    inside = PAGE - offset % PAGE
    return inside if inside < POOL_RECORD_SIZE else None


def encode_intent(inode: int, offset: int, old: bytes, new: bytes) -> bytes:
    body = _HEAD.pack(_MAGIC, _VERSION, inode, offset) + old + new
    return body + struct.pack("<I", binascii.crc32(body))


def decode_intent(data: bytes) -> tuple[int, int, bytes, bytes] | None:
    """(inode, offset, old record, new record), or None for anything but a whole,
    intact intent (a cut intent write means the record write never started)."""
    if len(data) != _SIZE:
        return None
    body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    if binascii.crc32(body) != crc:
        return None
    magic, version, inode, offset = _HEAD.unpack_from(body)
    if magic != _MAGIC or version != _VERSION or offset % POOL_RECORD_SIZE:
        return None
    old = body[_HEAD.size : _HEAD.size + POOL_RECORD_SIZE]
    new = body[_HEAD.size + POOL_RECORD_SIZE :]
    return inode, offset, old, new


def cut_write(slot: bytes, old: bytes, new: bytes) -> bool:
    """True if ``slot`` is exactly what a rewrite of ``old`` by ``new`` leaves when it
    stops partway: a head of ``new``, then the rest of ``old``. (The kernel stops at a
    page boundary; any point is accepted, the test stays exact.)"""
    if len(slot) != len(old) or slot == old or slot == new:
        return False
    split = next(i for i, (a, b) in enumerate(zip(slot, new, strict=True)) if a != b)
    return slot[split:] == old[split:]


class IntentFile:
    """The intent file of one pool, opened on first use: never through a link, and
    only if it is a regular file of this user's alone (an unprivileged user must not
    get root to write into, or replay from, a file they placed)."""

    def __init__(self, pool_path: str, pool: int) -> None:
        self.path = intent_path(pool_path, pool)
        self._fd: int | None = None

    def _open(self, create: bool) -> int | None:
        """The descriptor (None: no intent file and ``create`` is off); OSError for a
        file that is not this user's alone, which is neither written nor replayed."""
        if self._fd is None:
            flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
            try:
                fd = os.open(self.path, flags, 0o600)
            except FileNotFoundError:
                return None
            st = os.fstat(fd)
            if (
                not stat.S_ISREG(st.st_mode)
                or st.st_uid != os.geteuid()
                or st.st_mode & 0o022
                or st.st_nlink != 1
            ):
                os.close(fd)
                raise OSError(errno.EPERM, "not a file of this user's alone")
            self._fd = fd
        return self._fd

    def save(self, inode: int, offset: int, old: bytes, new: bytes) -> None:
        """Record the rewrite about to happen (OSError if it cannot be: then the
        rewrite must not happen either)."""
        fd = self._open(create=True)
        assert fd is not None
        data = encode_intent(inode, offset, old, new)
        if os.pwrite(fd, data, 0) != len(data):  # pragma: no cover - regular file
            raise OSError(f"short write of {self.path}")

    def load(self) -> tuple[int, int, bytes, bytes] | None:
        try:
            fd = self._open(create=False)
            if fd is None:
                return None
            return decode_intent(os.pread(fd, _SIZE + 1, 0))
        except OSError:
            return None

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
