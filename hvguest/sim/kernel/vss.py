"""hv_snapshot: the VSS driver.

Only FREEZE, THAW and HOT_BACKUP reach the daemon (12-byte ``hv_vss_msg``); the driver
answers the other operations itself, and fails the three with HV_E_FAIL when no daemon
is registered. FREEZE has a 900 s deadline, the rest 30 s.
"""

from __future__ import annotations

import errno
import struct

from hvguest.sim.kernel.channel import HV_E_FAIL, ICMSG_HDR, ICMSGTYPE_VSS, msgtype
from hvguest.sim.kernel.service import HV_UTIL_TIMEOUT, State, Txn, UtilService

VSS_MSG_SIZE = 12
VSS_FREEZE_TIMEOUT = 900.0
OP_CREATE, OP_DELETE, OP_HOT_BACKUP, OP_GET_DM_INFO, OP_BU_COMPLETE = range(5)
OP_FREEZE, OP_THAW, OP_AUTO_RECOVER = 5, 6, 7
OP_REGISTER, OP_REGISTER1 = 128, 129
VSS_HBU_NO_AUTO_RECOVERY = 5
FLAGS_OFF = 8  # vss_cf.flags / dm_info.flags inside hv_vss_msg
TO_DAEMON = (OP_FREEZE, OP_THAW, OP_HOT_BACKUP)


class VssKernel(UtilService):
    device_name = "hv_vss"
    icmsgtype = ICMSGTYPE_VSS
    recv_size = 2 * 4096
    fw_versions = [0x30000]
    srv_versions = [0x50000]

    dm_reg_value = 0
    suspend_message = bytes([OP_THAW]) + bytes(VSS_MSG_SIZE - 1)  # the fake THAW

    def on_channel(self) -> None:
        while self.state <= State.READY:
            got = self._next_host_packet()
            if got is None:
                return
            trans_id, length = got
            if length < ICMSG_HDR:
                self.klog(f"packet length too small: {length}")
                continue
            kind = msgtype(self.recv_buffer)
            if self.is_negotiate(length):
                self._answer_negotiate(trans_id, length)
                continue
            if kind != ICMSGTYPE_VSS:
                self.klog(f"invalid msg type {kind}; packet dropped")
                continue
            if length < ICMSG_HDR + VSS_MSG_SIZE:
                self.klog(f"VSS packet too small: {length}")
                continue
            self.txn = Txn(trans_id, length)
            op = self.recv_buffer[ICMSG_HDR]
            if op in TO_DAEMON:
                if self.state < State.READY:
                    self.klog("not ready for request")
                    self.respond_status(HV_E_FAIL)
                    continue
                self.state = State.HOSTMSG_RECEIVED
                self._send_op(op)
                return
            if op == OP_GET_DM_INFO:
                struct.pack_into("<I", self.recv_buffer, ICMSG_HDR + FLAGS_OFF, 0)
            self.txn = None
            self._send_buffer(trans_id, length)

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
                "<I", self.recv_buffer, ICMSG_HDR + FLAGS_OFF, VSS_HBU_NO_AUTO_RECOVERY
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
