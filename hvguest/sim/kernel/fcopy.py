"""hv_fcopy (kernels <= 6.9): the legacy file-copy driver.

START_FILE_COPY reaches the daemon as 1088 bytes with UTF-8 names (converted from the
host's UTF-16LE), WRITE_TO_FILE as 6196 bytes unchanged, every other operation as the
host's payload length from the fcopy header on, i.e. 28 bytes beyond the host message
(whatever the driver's receive buffer held there). The daemon answers 4 bytes.
"""

from __future__ import annotations

import errno
import struct

from hvguest.sim.kernel.channel import msgtype
from hvguest.sim.kernel.service import HV_E_FAIL, HV_UTIL_TIMEOUT, Driver, State, UtilService
from hvguest.wire.icmsg import FCOPY_FW_VERSIONS, FCOPY_SRV_VERSIONS, ICMSG_HDR_SIZE, IcMsgType
from hvguest.wire.kvp_kernel import kernel_utf16_to_utf8

FCOPY_HDR_SIZE = 36
START_SIZE = 1088
DO_FCOPY_SIZE = 6196
W_MAX_PATH = 260
OP_START, OP_WRITE, OP_COMPLETE, OP_CANCEL = range(4)
FILE_NAME_OFF, PATH_NAME_OFF, FLAGS_OFF, SIZE_OFF = 36, 556, 1076, 1080
FCOPY_VERSION_0, FCOPY_VERSION_1 = 0, 1


class FcopyKernel(UtilService):
    driver = Driver(
        "hv_fcopy",
        IcMsgType.FCOPY,
        2 * 4096,
        FCOPY_FW_VERSIONS,
        FCOPY_SRV_VERSIONS,
        FCOPY_HDR_SIZE,
        "fcopy packet too small",
    )

    dm_reg_value = -1
    suspend_message = struct.pack("<I", OP_CANCEL) + bytes(FCOPY_HDR_SIZE - 4)  # fake CANCEL

    def _packet_kind(self, length: int) -> int | None:
        # hv_fcopy does not log a short packet: it reads no type, and drops it as invalid.
        return msgtype(self.recv_buffer) if length >= ICMSG_HDR_SIZE else -1

    def take_request(self, trans_id: int, length: int) -> bool:
        if self.state < State.READY:
            self.respond_status(HV_E_FAIL)  # no daemon registered
            return False
        self.state = State.HOSTMSG_RECEIVED
        self.arm(HV_UTIL_TIMEOUT)
        self._send_data(length)
        return True

    def _send_data(self, length: int) -> None:
        host = bytes(self.recv_buffer[ICMSG_HDR_SIZE:])
        (op,) = struct.unpack_from("<I", host, 0)
        if op == OP_START:
            msg = bytearray(START_SIZE)
            struct.pack_into("<I", msg, 0, op)
            for off in (FILE_NAME_OFF, PATH_NAME_OFF):
                name = kernel_utf16_to_utf8(
                    host[off:], W_MAX_PATH, W_MAX_PATH - 1, skip_oversized=self.nls_skip_oversized
                )
                msg[off : off + len(name)] = name
            msg[FLAGS_OFF:START_SIZE] = host[FLAGS_OFF:START_SIZE]
            out = bytes(msg)
        elif op == OP_WRITE:
            out = host[:DO_FCOPY_SIZE]
        else:
            out = host[:length]
        self._send_to_daemon(out)

    def on_msg(self, data: bytes) -> int:
        if len(data) != 4:
            return -errno.EINVAL
        (val,) = struct.unpack("<i", data)
        if self.state == State.DEVICE_INIT:
            return self._handshake(val)
        if self.state != State.USERSPACE_REQ:
            return -errno.EINVAL
        if self.cancel_timeout():
            self.state = State.USERSPACE_RECV
            if not self._finish_raw(data):
                self.respond_status(val & 0xFFFFFFFF)
            self.poll_wrapper()
        return 0

    def _handshake(self, version: int) -> int:
        if version == FCOPY_VERSION_1:
            if self.transport.send(struct.pack("<I", 1), on_read=self._register_done) != 0:
                return -errno.EFAULT
        elif version != FCOPY_VERSION_0:
            return -errno.EINVAL
        self.dm_reg_value = version
        return 0
