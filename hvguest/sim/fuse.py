"""Serve simulated devices as files of a FUSE file system, speaking /dev/fuse directly.

Each device is a regular file at the mount root (``hv_kvp``, ``uio0``...). Every open
file description maps to ``Device.open(handle)`` with a fresh handle, so exclusive opens
(``-EBUSY``) behave like the kernel's misc devices. Files are opened with
``FOPEN_DIRECT_IO``: each read()/write()/pread()/pwrite() reaches the device as one
request of the caller's size. A read the device cannot answer yet is parked and retried
when the device's waker fires; POLL requests register the kernel's poll handle and the
same waker sends ``FUSE_NOTIFY_POLL`` (without it the kernel would treat the file as
always readable).

Passthrough files (``/dev/uioN``): the OPEN reply adds ``FOPEN_PASSTHROUGH`` with a
backing file registered through ``FUSE_DEV_IOC_BACKING_OPEN``. read/write/poll still come
here (direct I/O wins for those), while mmap() goes straight to the backing file, which
the simulator maps too: both sides share the ring memory.

Known differences from real character devices: fstat() reports S_IFREG, a 0-byte write
returns 0 without reaching the device, and RELEASE arrives asynchronously after close().
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hvguest.sim import fuse_proto as fp
from hvguest.sim.device import WOULD_BLOCK, Device

log = logging.getLogger(__name__)

MAX_WRITE = 1 << 20  # one request may carry 1 MiB; fcopy fragments are ~6 KiB
READ_BUFFER = MAX_WRITE + 64 * 1024  # header + fuse_write_in + payload, with margin
ATTR_TIMEOUT = 1  # seconds the kernel may cache names and attributes


@dataclass
class _Node:
    nodeid: int
    name: str
    device: Device
    backing_path: str | None = None
    backing_id: int | None = None
    backing_fd: int | None = None
    poll_handles: dict[int, int] = field(default_factory=dict)  # fh -> kernel poll handle


@dataclass
class _Parked:
    fh: int
    size: int


class FuseDeviceServer:
    """A FUSE file system whose files are simulated devices; driven by ``process()``."""

    # The kernel end of the protocol; the CUSE front end (hvguest.sim.cuse) opens /dev/cuse.
    device_path = "/dev/fuse"

    def __init__(
        self,
        devices: Mapping[str, Device],
        *,
        passthrough: Mapping[str, str] | None = None,
    ) -> None:
        passthrough = dict(passthrough or {})
        for name in list(devices) + list(passthrough):
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(f"device file name {name!r} is not a plain file name")
        missing = set(passthrough) - set(devices)
        if missing:
            raise ValueError(f"passthrough files without a device: {sorted(missing)}")
        self._nodes: dict[int, _Node] = {}
        self._by_name: dict[str, _Node] = {}
        for i, name in enumerate(sorted(devices), start=fp.ROOT_ID + 1):
            node = _Node(i, name, devices[name], backing_path=passthrough.get(name))
            self._nodes[i] = node
            self._by_name[name] = node
        self._fd = os.open(self.device_path, os.O_RDWR | os.O_NONBLOCK)
        os.set_inheritable(self._fd, True)
        self._lock = threading.RLock()
        self._handles: dict[int, _Node] = {}  # fh -> node of every open file
        self._next_fh = 1
        self._parked: dict[int, _Parked] = {}  # unique -> parked READ
        self._initialised = False
        self._passthrough_ok = False
        self._closed = False
        self._disconnected = False
        self._start = time.time()
        for name, node in self._by_name.items():
            node.device.set_waker(self._waker(name))

    # -- public API -------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The file names at the mount root."""
        return sorted(self._by_name)

    @property
    def initialised(self) -> bool:
        """True once the kernel's INIT was answered (the mount is live)."""
        return self._initialised

    @property
    def disconnected(self) -> bool:
        """True once the mount is gone (or after ``close()``): the fd then stays readable
        and select() would spin, so event loops should drop the server and close it."""
        return self._disconnected

    def fileno(self) -> int:
        return self._fd

    def mount_options(self) -> str:
        return (
            f"fd={self._fd},rootmode=40000,user_id=0,group_id=0,"
            f"allow_other,default_permissions,max_read={MAX_WRITE}"
        )

    def process(self) -> None:
        """Handle every request readable now. Never blocks."""
        with self._lock:
            while not self._closed:
                try:
                    req = os.read(self._fd, READ_BUFFER)
                except BlockingIOError:
                    return
                except InterruptedError:
                    continue
                except OSError as e:
                    # EPERM: not mounted yet; ENODEV: unmounted or aborted.
                    if e.errno == errno.ENODEV:
                        self._disconnected = True
                    elif e.errno != errno.EPERM:
                        log.warning("reading /dev/fuse: %s", e)
                    return
                if not req:
                    return
                self._dispatch(req)

    def wake(self, name: str) -> None:
        """Retry parked reads of ``name`` and notify the kernel's pollers of that file."""
        with self._lock:
            node = self._by_name.get(name)
            if node is None or self._closed:
                return
            for unique, parked in list(self._parked.items()):
                if self._handles.get(parked.fh) is not node:
                    continue
                result = node.device.read(parked.fh, parked.size)
                if result == WOULD_BLOCK:
                    continue
                del self._parked[unique]
                self._reply_read(unique, result, parked.size)
            for kh in set(node.poll_handles.values()):
                self._send_raw(fp.OUT_HEADER.pack(fp.OUT_HEADER.size + 8, fp.NOTIFY_POLL, 0)
                               + fp.NOTIFY_POLL_OUT.pack(kh))

    def close(self) -> None:
        """Close /dev/fuse: the kernel aborts the connection (pending calls fail)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._disconnected = True
            for node in self._nodes.values():
                if node.backing_fd is not None:
                    os.close(node.backing_fd)
                    node.backing_fd = None
            os.close(self._fd)

    def __enter__(self) -> FuseDeviceServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------

    def _waker(self, name: str) -> Callable[[], None]:
        return lambda: self.wake(name)

    def _send_raw(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError as e:
            # ENOENT: the request was interrupted/aborted meanwhile; nothing to do.
            if e.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF):
                log.warning("writing /dev/fuse: %s", e)

    def _reply(self, unique: int, payload: bytes = b"") -> None:
        self._send_raw(fp.OUT_HEADER.pack(fp.OUT_HEADER.size + len(payload), 0, unique) + payload)

    def _error(self, unique: int, err: int) -> None:
        """Reply with a positive errno."""
        self._send_raw(fp.OUT_HEADER.pack(fp.OUT_HEADER.size, -abs(err), unique))

    def _reply_read(self, unique: int, result: bytes | int, size: int) -> None:
        if isinstance(result, int):
            self._error(unique, -result if result < 0 else errno.EIO)
        elif len(result) > size:
            log.warning("device returned %d bytes for a %d-byte read", len(result), size)
            self._error(unique, errno.EIO)
        else:
            self._reply(unique, bytes(result))

    def _attr(self, nodeid: int) -> bytes:
        now = int(self._start)
        if nodeid == fp.ROOT_ID:
            mode, size, nlink = stat.S_IFDIR | 0o755, 0, 2
        else:
            node = self._nodes[nodeid]
            mode, nlink, size = stat.S_IFREG | 0o600, 1, 0
            if node.backing_path is not None:
                try:
                    size = os.stat(node.backing_path).st_size
                except OSError:
                    size = 0
        return fp.ATTR.pack(nodeid, size, (size + 511) // 512, now, now, now, 0, 0, 0,
                            mode, nlink, 0, 0, 0, 4096, 0)

    def _dispatch(self, req: bytes) -> None:
        length, opcode, unique, nodeid, _uid, _gid, _pid, _ext, _pad = fp.IN_HEADER.unpack_from(req)
        body = req[fp.IN_HEADER.size:length]
        handler = _HANDLERS.get(opcode)
        if handler is None:
            if opcode not in (fp.FORGET, fp.BATCH_FORGET):
                log.debug("FUSE opcode %d not supported", opcode)
                self._error(unique, errno.ENOSYS)
            return
        try:
            handler(self, unique, nodeid, body)
        except Exception:
            # A broken request must neither kill the loop nor leave the caller waiting
            # forever (a sent request cannot even be killed): answer EIO. If a reply
            # already went out, the kernel drops this one.
            log.exception("FUSE opcode %d failed", opcode)
            if opcode not in (fp.INTERRUPT,):
                self._error(unique, errno.EIO)

    # -- handlers ---------------------------------------------------------------------

    def _op_init(self, unique: int, _nodeid: int, body: bytes) -> None:
        major, minor, max_readahead, flags = fp.INIT_IN.unpack_from(body)
        flags2 = 0
        if flags & fp.INIT_EXT and len(body) >= 20:
            flags2 = struct.unpack_from("=I", body, 16)[0]
        offered = flags | (flags2 << 32)
        if major != fp.KERNEL_MAJOR:
            log.error("kernel speaks FUSE %d.%d; need 7.x", major, minor)
            self._error(unique, errno.EPROTO)
            return
        want = fp.BIG_WRITES | fp.MAX_PAGES | fp.INIT_EXT
        depth = 0
        if any(n.backing_path for n in self._nodes.values()):
            if offered & fp.PASSTHROUGH:
                want |= fp.PASSTHROUGH
                depth = 1  # backing files live on tmpfs (stack depth 0)
            else:
                log.warning("kernel does not offer FUSE passthrough; mmap of ring files will fail")
        granted = want & offered
        self._passthrough_ok = bool(granted & fp.PASSTHROUGH)
        out = fp.INIT_OUT.pack(
            fp.KERNEL_MAJOR, min(minor, fp.KERNEL_MINOR), max_readahead,
            granted & 0xFFFFFFFF, 16, 12, MAX_WRITE, 1, MAX_WRITE // 4096, 0,
            granted >> 32, depth if self._passthrough_ok else 0, 0, 0, 0, 0, 0, 0,
        )
        self._initialised = True
        self._reply(unique, out)

    def _op_destroy(self, unique: int, _nodeid: int, _body: bytes) -> None:
        self._reply(unique)

    def _op_lookup(self, unique: int, nodeid: int, body: bytes) -> None:
        name = body.split(b"\0", 1)[0].decode("utf-8", "replace")
        node = self._by_name.get(name) if nodeid == fp.ROOT_ID else None
        if node is None:
            self._error(unique, errno.ENOENT)
            return
        head = fp.ENTRY_OUT_HEAD.pack(node.nodeid, 0, ATTR_TIMEOUT, ATTR_TIMEOUT, 0, 0)
        self._reply(unique, head + self._attr(node.nodeid))

    def _op_getattr(self, unique: int, nodeid: int, _body: bytes) -> None:
        if nodeid != fp.ROOT_ID and nodeid not in self._nodes:
            self._error(unique, errno.ENOENT)
            return
        self._reply(unique, fp.ATTR_OUT_HEAD.pack(ATTR_TIMEOUT, 0, 0) + self._attr(nodeid))

    # SETATTR (O_TRUNC, utimes, chmod): accepted, attributes stay fixed.
    _op_setattr = _op_getattr

    def _op_access(self, unique: int, _nodeid: int, _body: bytes) -> None:
        self._reply(unique)

    _op_flush = _op_access
    _op_fsync = _op_access
    _op_releasedir = _op_access
    _op_fsyncdir = _op_access

    def _op_statfs(self, unique: int, _nodeid: int, _body: bytes) -> None:
        n = len(self._nodes)
        st = fp.KSTATFS.pack(0, 0, 0, n + 1, 0, 4096, 255, 4096, 0, *([0] * 6))
        self._reply(unique, st)

    def _op_noxattr(self, unique: int, _nodeid: int, _body: bytes) -> None:
        self._error(unique, errno.ENOSYS)

    def _op_opendir(self, unique: int, nodeid: int, _body: bytes) -> None:
        if nodeid != fp.ROOT_ID:
            self._error(unique, errno.ENOTDIR)
            return
        self._reply(unique, fp.OPEN_OUT.pack(0, 0, 0))

    def _op_readdir(self, unique: int, _nodeid: int, body: bytes) -> None:
        _fh, offset, size, *_ = fp.READ_IN.unpack_from(body)
        entries = [(fp.ROOT_ID, b".", fp.DT_DIR), (fp.ROOT_ID, b"..", fp.DT_DIR)]
        entries += [(n.nodeid, n.name.encode(), fp.DT_REG) for n in self._by_name.values()]
        out = b""
        for index in range(offset, len(entries)):
            ino, name, dtype = entries[index]
            rec = fp.dirent(ino, index + 1, name, dtype)
            if len(out) + len(rec) > size:
                break
            out += rec
        self._reply(unique, out)

    def _op_open(self, unique: int, nodeid: int, _body: bytes) -> None:
        node = self._nodes.get(nodeid)
        if node is None:
            self._error(unique, errno.EISDIR if nodeid == fp.ROOT_ID else errno.ENOENT)
            return
        flags, backing_id = fp.FOPEN_DIRECT_IO, 0
        if node.backing_path is not None:
            try:
                backing_id = self._backing_id(node)
            except OSError as e:
                log.error("passthrough for %s: %s", node.name, e)
                self._error(unique, e.errno or errno.EIO)
                return
            flags |= fp.FOPEN_PASSTHROUGH
        fh = self._next_fh
        self._next_fh += 1
        rc = node.device.open(fh)
        if rc < 0:
            self._error(unique, -rc)
            return
        self._handles[fh] = node
        self._reply(unique, fp.OPEN_OUT.pack(fh, flags, backing_id))

    def _backing_id(self, node: _Node) -> int:
        # One backing registration per file: every open of an inode in passthrough mode
        # must use the same backing file.
        if node.backing_id is not None:
            return node.backing_id
        if not self._passthrough_ok:
            raise OSError(errno.EOPNOTSUPP, "FUSE passthrough not negotiated")
        assert node.backing_path is not None
        bfd = os.open(node.backing_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            arg = bytearray(fp.BACKING_MAP.pack(bfd, 0, 0))
            # With a mutable buffer ioctl() returns the syscall's result: the backing id.
            backing_id = fcntl.ioctl(self._fd, fp.DEV_IOC_BACKING_OPEN, arg, True)
        except OSError:
            os.close(bfd)
            raise
        node.backing_fd, node.backing_id = bfd, int(backing_id)
        return node.backing_id

    def _op_release(self, unique: int, _nodeid: int, body: bytes) -> None:
        fh = fp.RELEASE_IN.unpack_from(body)[0]
        node = self._handles.pop(fh, None)
        if node is not None:
            node.poll_handles.pop(fh, None)
            for u, parked in list(self._parked.items()):
                if parked.fh == fh:
                    del self._parked[u]
            node.device.release(fh)
        self._reply(unique)

    def _op_read(self, unique: int, _nodeid: int, body: bytes) -> None:
        fh, _offset, size, _rflags, _owner, file_flags, _pad = fp.READ_IN.unpack_from(body)
        node = self._handles.get(fh)
        if node is None:
            self._error(unique, errno.EBADF)
            return
        result = node.device.read(fh, size)
        if result == WOULD_BLOCK:
            # The misc devices block even for O_NONBLOCK opens; a device that honours
            # it (UIO) says so with a ``honours_nonblock = True`` attribute.
            if file_flags & os.O_NONBLOCK and getattr(node.device, "honours_nonblock", False):
                self._error(unique, errno.EAGAIN)
            else:
                self._parked[unique] = _Parked(fh, size)
            return
        self._reply_read(unique, result, size)

    def _op_write(self, unique: int, _nodeid: int, body: bytes) -> None:
        fh, _offset, size, *_ = fp.WRITE_IN.unpack_from(body)
        data = body[fp.WRITE_IN.size:fp.WRITE_IN.size + size]
        node = self._handles.get(fh)
        if node is None:
            self._error(unique, errno.EBADF)
            return
        rc = node.device.write(fh, data)
        if rc < 0:
            self._error(unique, -rc)
        else:
            self._reply(unique, fp.WRITE_OUT.pack(min(rc, size), 0))

    def _op_poll(self, unique: int, _nodeid: int, body: bytes) -> None:
        fh, kh, flags, _events = fp.POLL_IN.unpack_from(body)
        node = self._handles.get(fh)
        if node is None:
            self._error(unique, errno.EBADF)
            return
        if flags & fp.POLL_SCHEDULE_NOTIFY:
            node.poll_handles[fh] = kh
        self._reply(unique, fp.POLL_OUT.pack(node.device.poll(fh) & 0xFFFFFFFF, 0))

    def _op_interrupt(self, _unique: int, _nodeid: int, body: bytes) -> None:
        target = fp.INTERRUPT_IN.unpack_from(body)[0]
        # Only parked reads can be pending here; any other request was answered at once.
        if self._parked.pop(target, None) is not None:
            self._error(target, errno.EINTR)


_HANDLERS = {
    fp.INIT: FuseDeviceServer._op_init,
    fp.DESTROY: FuseDeviceServer._op_destroy,
    fp.LOOKUP: FuseDeviceServer._op_lookup,
    fp.GETATTR: FuseDeviceServer._op_getattr,
    fp.SETATTR: FuseDeviceServer._op_setattr,
    fp.ACCESS: FuseDeviceServer._op_access,
    fp.FLUSH: FuseDeviceServer._op_flush,
    fp.FSYNC: FuseDeviceServer._op_fsync,
    fp.STATFS: FuseDeviceServer._op_statfs,
    fp.GETXATTR: FuseDeviceServer._op_noxattr,
    fp.LISTXATTR: FuseDeviceServer._op_noxattr,
    fp.SETXATTR: FuseDeviceServer._op_noxattr,
    fp.REMOVEXATTR: FuseDeviceServer._op_noxattr,
    fp.OPENDIR: FuseDeviceServer._op_opendir,
    fp.READDIR: FuseDeviceServer._op_readdir,
    fp.RELEASEDIR: FuseDeviceServer._op_releasedir,
    fp.FSYNCDIR: FuseDeviceServer._op_fsyncdir,
    fp.OPEN: FuseDeviceServer._op_open,
    fp.RELEASE: FuseDeviceServer._op_release,
    fp.READ: FuseDeviceServer._op_read,
    fp.WRITE: FuseDeviceServer._op_write,
    fp.POLL: FuseDeviceServer._op_poll,
    fp.INTERRUPT: FuseDeviceServer._op_interrupt,
}
