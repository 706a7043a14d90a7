"""Serve one simulated device as a real character device through CUSE (/dev/cuse).

CUSE speaks the FUSE protocol: after the CUSE_INIT handshake, whose reply names the
device (``DEVNAME=vmbus/hv_kvp``), the kernel creates ``/dev/vmbus/hv_kvp`` (udev
sees ``SUBSYSTEM=cuse``, ``KERNEL=vmbus!hv_kvp``) and forwards every open, read,
write, poll and release on it as FUSE requests with node id 0. Those are answered by
``FuseDeviceServer``'s own handlers: this class only swaps the kernel end, answers
CUSE_INIT and maps node 0 to its single device.

Unlike the FUSE file, the CUSE node is a real character device (``S_IFCHR``), and its
RELEASE is synchronous. Closing the server removes the device (a udev "remove"
event), as a rescinded VMBus channel does. One server per device: each needs its own
/dev/cuse file descriptor.
"""

from __future__ import annotations

import errno
import logging
import struct

from hvguest.sim import fuse_proto as fp
from hvguest.sim.device import Device
from hvguest.sim.fuse import MAX_WRITE, FuseDeviceServer

log = logging.getLogger(__name__)

CUSE_INIT = 4096
CUSE_MIN_MINOR = 11  # the kernel refuses an older protocol in the CUSE_INIT reply
CUSE_INIT_IN = struct.Struct("=IIII")  # major minor unused flags
# major minor unused flags max_read max_write dev_major dev_minor spare[10]
CUSE_INIT_OUT = struct.Struct("=IIIIIIII10I")
CUSE_INIT_INFO_MAX = 4096
NODE_ID = 0  # CUSE requests carry no inode: every one is for the device


def device_info(devname: str) -> bytes:
    """The CUSE_INIT reply's info block: NUL-terminated ``KEY=value`` strings."""
    if not devname or devname.startswith("/") or "\0" in devname or ".." in devname.split("/"):
        raise ValueError(f"bad CUSE device name {devname!r} (relative to /dev, e.g. vmbus/hv_kvp)")
    info = f"DEVNAME={devname}".encode() + b"\0"
    if len(info) > CUSE_INIT_INFO_MAX:
        raise ValueError("CUSE device name too long")
    return info


class CuseDeviceServer(FuseDeviceServer):
    """One CUSE character device ``/dev/<devname>`` served by ``device``."""

    device_path = "/dev/cuse"

    def __init__(
        self,
        name: str,
        device: Device,
        *,
        devname: str,
        dev_major: int = 0,
        dev_minor: int = 0,
    ) -> None:
        self.devname = devname
        self._info = device_info(devname)
        self._devt = (dev_major, dev_minor)  # 0:0 = the kernel picks a free number
        super().__init__({name: device})
        self.name = name
        self._nodes[NODE_ID] = self._by_name[name]

    def mount_options(self) -> str:
        raise TypeError("a CUSE device is not mounted: the kernel creates it after CUSE_INIT")

    def _dispatch(self, req: bytes) -> None:
        length, opcode, unique, *_ = fp.IN_HEADER.unpack_from(req)
        if opcode == CUSE_INIT:
            try:
                self._op_cuse_init(unique, req[fp.IN_HEADER.size:length])
            except Exception:
                log.exception("CUSE_INIT failed")
                self._error(unique, errno.EIO)
            return
        super()._dispatch(req)

    def _op_cuse_init(self, unique: int, body: bytes) -> None:
        major, minor, _unused, _flags = CUSE_INIT_IN.unpack_from(body)
        if major != fp.KERNEL_MAJOR or minor < CUSE_MIN_MINOR:
            log.error("kernel speaks CUSE/FUSE %d.%d; need 7.%d or later", major, minor,
                      CUSE_MIN_MINOR)
            self._error(unique, errno.EPROTO)
            return
        out = CUSE_INIT_OUT.pack(
            fp.KERNEL_MAJOR, min(minor, fp.KERNEL_MINOR), 0,
            0,  # no CUSE_UNRESTRICTED_IOCTL: the devices have no ioctls
            MAX_WRITE, MAX_WRITE, self._devt[0], self._devt[1], *([0] * 10),
        )
        self._initialised = True
        self._reply(unique, out + self._info)
        log.info("CUSE device /dev/%s offered", self.devname)
