"""Numbers and structure layouts of the kernel's FUSE protocol (<linux/fuse.h>, 7.40+).

Only what the device front end needs. All structures are native-endian and padded to
64 bits; the ``struct`` formats below use ``=`` (native order, no alignment) with the
padding spelled out.
"""

from __future__ import annotations

import struct

KERNEL_MAJOR = 7
# 7.40 added FUSE_PASSTHROUGH, fuse_init_out.max_stack_depth and fuse_open_out.backing_id.
KERNEL_MINOR = 40
ROOT_ID = 1

# opcodes
LOOKUP = 1
FORGET = 2
GETATTR = 3
SETATTR = 4
OPEN = 14
READ = 15
WRITE = 16
STATFS = 17
RELEASE = 18
FSYNC = 20
SETXATTR = 21
GETXATTR = 22
LISTXATTR = 23
REMOVEXATTR = 24
FLUSH = 25
INIT = 26
OPENDIR = 27
READDIR = 28
RELEASEDIR = 29
FSYNCDIR = 30
ACCESS = 34
INTERRUPT = 36
DESTROY = 38
POLL = 40
BATCH_FORGET = 42

# notify codes (sent with unique 0 and the code in the error field)
NOTIFY_POLL = 1

# INIT flags (flags; bits 32.. go to flags2)
BIG_WRITES = 1 << 5
MAX_PAGES = 1 << 22
INIT_EXT = 1 << 30
PASSTHROUGH = 1 << 37

# OPEN reply flags
FOPEN_DIRECT_IO = 1 << 0
FOPEN_PASSTHROUGH = 1 << 7

POLL_SCHEDULE_NOTIFY = 1 << 0

# _IOW(229, 1, struct fuse_backing_map): dir=1 (write) << 30 | size 16 << 16 | 229 << 8 | 1
DEV_IOC_BACKING_OPEN = (1 << 30) | (16 << 16) | (229 << 8) | 1
DEV_IOC_BACKING_CLOSE = (1 << 30) | (4 << 16) | (229 << 8) | 2

IN_HEADER = struct.Struct("=IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen pad
OUT_HEADER = struct.Struct("=IiQ")  # len error unique
INIT_IN = struct.Struct("=IIII")  # major minor max_readahead flags (flags2 follows if INIT_EXT)
INIT_OUT = struct.Struct("=IIIIHHIIHHII6I")
# ino size blocks atime mtime ctime atimensec mtimensec ctimensec mode nlink uid gid rdev
# blksize flags
ATTR = struct.Struct("=QQQQQQIIIIIIIIII")
ENTRY_OUT_HEAD = struct.Struct("=QQQQII")  # nodeid generation entry_valid attr_valid nsec nsec
ATTR_OUT_HEAD = struct.Struct("=QII")  # attr_valid attr_valid_nsec dummy
OPEN_IN = struct.Struct("=II")
OPEN_OUT = struct.Struct("=QIi")  # fh open_flags backing_id
READ_IN = struct.Struct("=QQIIQII")  # fh offset size read_flags lock_owner flags pad
WRITE_IN = struct.Struct("=QQIIQII")
WRITE_OUT = struct.Struct("=II")
RELEASE_IN = struct.Struct("=QIIQ")
POLL_IN = struct.Struct("=QQII")  # fh kh flags events
POLL_OUT = struct.Struct("=II")
NOTIFY_POLL_OUT = struct.Struct("=Q")
INTERRUPT_IN = struct.Struct("=Q")
BATCH_FORGET_IN = struct.Struct("=II")
KSTATFS = struct.Struct("=QQQQQIIII6I")
DIRENT_HEAD = struct.Struct("=QQII")  # ino off namelen type
BACKING_MAP = struct.Struct("=iIQ")  # fd flags padding

DT_DIR = 4
DT_REG = 8

assert INIT_OUT.size == 64 and ATTR.size == 88 and IN_HEADER.size == 40
assert READ_IN.size == 40 and KSTATFS.size == 80 and BACKING_MAP.size == 16


def dirent(ino: int, next_off: int, name: bytes, dtype: int) -> bytes:
    """One fuse_dirent, padded to a multiple of 8 bytes."""
    raw = DIRENT_HEAD.pack(ino, next_off, len(name), dtype) + name
    return raw + b"\0" * (-len(raw) % 8)
