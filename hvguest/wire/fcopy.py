"""File copy ("Guest services") messages: ``hv_fcopy_hdr``, ``hv_start_fcopy``,
``hv_do_fcopy`` (protocol.md §4.1, §4.3, §5.5).

Names come in two encodings. On the legacy character device (kernels <= 6.9) the kernel
has already converted them to UTF-8 and stored the bytes byte-wise in the ``__u16[260]``
arrays (<= 259 bytes + NUL). On the host wire (and so for the UIO daemon, >= 6.10) they
are UTF-16LE, <= 259 code units + a 0 unit. ``utf16`` selects the form.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Self

from hvguest.errors import WireError
from hvguest.wire._codec import (
    check_min_length,
    get_uint,
    pack_status,
    pack_uint,
    registration_echo,
    terminated,
    utf8_bytes,
    utf8_text,
    utf16_field,
    utf16_text,
)

FCOPY_HDR_SIZE = 36
FCOPY_START_SIZE = 1088
FCOPY_DO_SIZE = 6196
DATA_FRAGMENT = 6 * 1024
W_MAX_PATH = 260
FCOPY_CURRENT_VERSION = 1
OVER_WRITE = 0x1
CREATE_PATH = 0x2

FCOPY_OP_SIZE = 4  # COMPLETE / CANCEL only need the u32 operation
FILE_NAME_OFFSET = 36
PATH_NAME_OFFSET = 556
NAME_FIELD_SIZE = 2 * W_MAX_PATH
COPY_FLAGS_OFFSET = 1076
FILE_SIZE_OFFSET = 1080
WRITE_OFFSET_OFFSET = 40
WRITE_SIZE_OFFSET = 48
WRITE_DATA_OFFSET = 52
FCOPY_REPLY_SIZE = 4
# operation @0, offset @40, size @48 of hv_do_fcopy, for the per-fragment path that
# reads a WRITE's head without decoding the whole message.
WRITE_HEAD = struct.Struct("<I36xQI")
assert WRITE_HEAD.size == WRITE_DATA_OFFSET


class FcopyOp(IntEnum):
    START_FILE_COPY = 0
    WRITE_TO_FILE = 1
    COMPLETE_FCOPY = 2
    CANCEL_FCOPY = 3


def _header(op: FcopyOp) -> bytes:
    """``hv_fcopy_hdr`` with the service ids zero (they are unused)."""
    return pack_uint(int(op), 4, "operation") + bytes(FCOPY_HDR_SIZE - 4)


def _name_field(name: str, field: str, utf16: bool) -> bytes:
    if utf16:
        return utf16_field(name, field, NAME_FIELD_SIZE)
    return utf8_bytes(name, field, W_MAX_PATH - 1).ljust(NAME_FIELD_SIZE, b"\0")


def _name_text(raw: bytes, field: str, utf16: bool) -> str:
    if utf16:
        return utf16_text(raw, field)
    # The kernel converts the host's name into at most W_MAX_PATH - 1 bytes of UTF-8
    # and a 0: the rest of the 520-byte field is never part of it (nor can encode()
    # write a longer name back).
    return utf8_text(terminated(raw[:W_MAX_PATH], field), field)


@dataclass(frozen=True)
class FcopyStart:
    """START_FILE_COPY: target ``path_name/file_name``, flags and announced size."""

    file_name: str
    path_name: str
    copy_flags: int = 0
    file_size: int = 0

    def encode(self, utf16: bool = False) -> bytes:
        return b"".join(
            (
                _header(FcopyOp.START_FILE_COPY),
                _name_field(self.file_name, "file_name", utf16),
                _name_field(self.path_name, "path_name", utf16),
                pack_uint(self.copy_flags, 4, "copy_flags"),
                pack_uint(self.file_size, 8, "file_size"),
            )
        )

    @classmethod
    def decode(cls, data: bytes, *, utf16: bool = False) -> Self:
        check_min_length(data, FCOPY_START_SIZE, "fcopy START_FILE_COPY message")
        return cls(
            _name_text(bytes(data[FILE_NAME_OFFSET:PATH_NAME_OFFSET]), "file_name", utf16),
            _name_text(bytes(data[PATH_NAME_OFFSET:COPY_FLAGS_OFFSET]), "path_name", utf16),
            get_uint(data, COPY_FLAGS_OFFSET, 4),
            get_uint(data, FILE_SIZE_OFFSET, 8),
        )


@dataclass(frozen=True)
class FcopyWrite:
    """WRITE_TO_FILE: ``data`` goes to the file at ``offset``; ``size`` is len(data)."""

    offset: int
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def encode(self, utf16: bool = False) -> bytes:
        """Always the full 6196 bytes, data zero-padded (``utf16`` has no effect)."""
        if len(self.data) > DATA_FRAGMENT:
            raise WireError(
                f"fcopy data is {len(self.data)} bytes, limit {DATA_FRAGMENT}",
                field="size",
                limit=DATA_FRAGMENT,
            )
        return b"".join(
            (
                _header(FcopyOp.WRITE_TO_FILE),
                bytes(4),
                pack_uint(self.offset, 8, "offset"),
                pack_uint(len(self.data), 4, "size"),
                bytes(self.data).ljust(DATA_FRAGMENT, b"\0"),
            )
        )

    @classmethod
    def decode(cls, data: bytes, *, utf16: bool = False) -> Self:
        check_min_length(data, WRITE_DATA_OFFSET, "fcopy WRITE_TO_FILE message", field="size")
        size = get_uint(data, WRITE_SIZE_OFFSET, 4)
        if size > DATA_FRAGMENT:
            raise WireError(
                f"fcopy size is {size}, limit {DATA_FRAGMENT}", field="size", limit=DATA_FRAGMENT
            )
        present = len(data) - WRITE_DATA_OFFSET
        if size > present:
            raise WireError(
                f"fcopy size is {size}, but only {present} data bytes are present",
                field="size",
                limit=present,
            )
        return cls(
            get_uint(data, WRITE_OFFSET_OFFSET, 8),
            bytes(data[WRITE_DATA_OFFSET : WRITE_DATA_OFFSET + size]),
        )


class _OperationOnly:
    """A request that is its operation only (COMPLETE, CANCEL)."""

    OP: ClassVar[FcopyOp]

    def encode(self, utf16: bool = False) -> bytes:
        return _header(self.OP)

    @classmethod
    def decode(cls, data: bytes, *, utf16: bool = False) -> Self:
        check_min_length(data, FCOPY_OP_SIZE, f"fcopy {cls.OP.name} message")
        return cls()


@dataclass(frozen=True)
class FcopyComplete(_OperationOnly):
    """COMPLETE_FCOPY: close the file."""

    OP = FcopyOp.COMPLETE_FCOPY


@dataclass(frozen=True)
class FcopyCancel(_OperationOnly):
    """CANCEL_FCOPY: abandon the copy (also the kernel's fake cancel on suspend)."""

    OP = FcopyOp.CANCEL_FCOPY


FcopyRequest = FcopyStart | FcopyWrite | FcopyComplete | FcopyCancel


def decode_fcopy_request(buf: bytes, *, utf16: bool) -> FcopyRequest:
    """Decode one request starting at the fcopy header.

    The legacy device delivers COMPLETE/CANCEL with any length >= 4, so only the u32
    operation is required for those; START needs 1088 bytes and WRITE 52 + ``size``.
    """
    check_min_length(buf, FCOPY_OP_SIZE, "fcopy message")
    op = get_uint(buf, 0, 4)
    if op == FcopyOp.START_FILE_COPY:
        return FcopyStart.decode(buf, utf16=utf16)
    if op == FcopyOp.WRITE_TO_FILE:
        return FcopyWrite.decode(buf, utf16=utf16)
    if op == FcopyOp.COMPLETE_FCOPY:
        return FcopyComplete()
    if op == FcopyOp.CANCEL_FCOPY:
        return FcopyCancel()
    raise WireError(
        f"fcopy operation is {op}, limit {max(FcopyOp)}", field="operation", limit=int(max(FcopyOp))
    )


# Registration on the legacy device: write int 1, read back a 4-byte u32 1.
FCOPY_REGISTER_MSG = pack_uint(FCOPY_CURRENT_VERSION, 4, "version")


def fcopy_reply(status: int) -> bytes:
    """The legacy device's reply: the status as a 4-byte int."""
    return pack_status(status)


def decode_fcopy_reply(reply: bytes) -> int:
    """The status in a reply built by ``fcopy_reply``."""
    if len(reply) != FCOPY_REPLY_SIZE:
        raise WireError(
            f"fcopy reply is {len(reply)} bytes, expected {FCOPY_REPLY_SIZE}",
            field="status",
            limit=FCOPY_REPLY_SIZE,
        )
    return int.from_bytes(reply, "little")


def decode_fcopy_register_reply(buf: bytes) -> int:
    """Check the kernel's registration echo (4 bytes, u32 1) and return the version."""
    return registration_echo(buf, FCOPY_CURRENT_VERSION, "fcopy registration reply")
