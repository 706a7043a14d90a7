"""hv_snapshot: the VSS driver.

Only FREEZE, THAW and HOT_BACKUP reach the daemon (12-byte ``hv_vss_msg``); the driver
answers the other operations itself, and fails the three with HV_E_FAIL when no daemon
is registered. FREEZE has a 900 s deadline, the rest 30 s.
"""

from __future__ import annotations

import errno
import struct

from hvguest.sim.kernel.service import HV_E_FAIL, HV_UTIL_TIMEOUT, Driver, State, UtilService
from hvguest.wire.icmsg import ICMSG_HDR_SIZE, VSS_FW_VERSIONS, VSS_SRV_VERSIONS, IcMsgType

VSS_MSG_SIZE = 12
VSS_FREEZE_TIMEOUT = 900.0
OP_CREATE, OP_DELETE, OP_HOT_BACKUP, OP_GET_DM_INFO, OP_BU_COMPLETE = range(5)
OP_FREEZE, OP_THAW, OP_AUTO_RECOVER = 5, 6, 7
OP_REGISTER, OP_REGISTER1 = 128, 129
VSS_HBU_NO_AUTO_RECOVERY = 5
FLAGS_OFF = 8  # vss_cf.flags / dm_info.flags inside hv_vss_msg
TO_DAEMON = (OP_FREEZE, OP_THAW, OP_HOT_BACKUP)


class VssKernel(UtilService):
    driver = Driver(
        "hv_vss",
        IcMsgType.VSS,
        2 * 4096,
        VSS_FW_VERSIONS,
        VSS_SRV_VERSIONS,
        VSS_MSG_SIZE,
        "VSS packet too small",
    )

    dm_reg_value = 0
    suspend_message = bytes([OP_THAW]) + bytes(VSS_MSG_SIZE - 1)  # the fake THAW

    def take_request(self, trans_id: int, length: int) -> bool:
        op = self.recv_buffer[ICMSG_HDR_SIZE]
        if op in TO_DAEMON:
            if self.state < State.READY:
                self.klog("not ready for request")
                self.respond_status(HV_E_FAIL)
                return False
            self.state = State.HOSTMSG_RECEIVED
            self._send_op(op)
            return True
        if op == OP_GET_DM_INFO:
            struct.pack_into("<I", self.recv_buffer, ICMSG_HDR_SIZE + FLAGS_OFF, 0)
        self.txn = None
        self._send_buffer(trans_id, length)
        return False

    def _send_op(self, op: int) -> None:
        self.arm(VSS_FREEZE_TIMEOUT if op == OP_FREEZE else HV_UTIL_TIMEOUT)
        self._send_to_daemon(bytes([op]) + bytes(VSS_MSG_SIZE - 1))

    def raw_timeout(self) -> float:
        return VSS_FREEZE_TIMEOUT

    def on_msg(self, data: bytes) -> int:
        if len(data) != VSS_MSG_SIZE:
            return -errno.EINVAL
        op = data[0]
        if op in (OP_REGISTER, OP_REGISTER1):
            # Byte 0 doubles as the low byte of a reply's status.
            if self.state > State.READY:
                return -errno.EINVAL
            return self._handshake(op)
        if self.state != State.USERSPACE_REQ:
            return -errno.EINVAL
        self.state = State.USERSPACE_RECV
        if op == OP_HOT_BACKUP and self.txn is not None and self.txn.raw is None:
            # The driver tests the reply's byte 0 (the status' low byte), not the
            # request's operation: a success reply never sets the flag.
            struct.pack_into(
                "<I", self.recv_buffer, ICMSG_HDR_SIZE + FLAGS_OFF, VSS_HBU_NO_AUTO_RECOVERY
            )
        if self.cancel_timeout():
            if not self._finish_raw(data):
                (status,) = struct.unpack_from("<I", data, 0)
                self.respond_status(status)
            self.poll_wrapper()
        return 0

    def _handshake(self, op: int) -> int:
        if op == OP_REGISTER1:
            reply = struct.pack("<I", OP_REGISTER1)
            if self.transport.send(reply, on_read=self._register_done) != 0:
                return -errno.EFAULT
        self.dm_reg_value = op
        return 0
