"""hv_kvp: the KVP driver between the host's UTF-16 messages and the daemon's UTF-8 ones.

Host layout = daemon layout (``hv_kvp_msg``, 7432 bytes) at IC offset 28, except the
IP operations, whose host form (``hv_kvp_ip_msg``) is 2 bytes shorter in front.
Only registration op 100 (or legacy 4) is accepted before READY; the channel is not
read at all until the daemon has read the registration echo.
"""

from __future__ import annotations

import errno
import struct

from hvguest.sim.kernel.channel import HostChannel
from hvguest.sim.kernel.service import HV_E_FAIL, HV_UTIL_TIMEOUT, Driver, State, UtilService
from hvguest.sim.kernel.timers import Timer, TimerQueue
from hvguest.wire.icmsg import ICMSG_HDR_SIZE, KVP_FW_VERSIONS, KVP_SRV_VERSIONS, IcMsgType
from hvguest.wire.kvp_kernel import (
    ENUM_KEY_MAX_UNITS,
    ENUM_VALUE_MAX_UNITS,
    kernel_utf8_to_utf16_partial,
    kvp_host_to_daemon,
)
from hvguest.wire.kvp_layout import (
    ENUM_KEY_OFFSET,
    ENUM_KEY_SIZE_OFFSET,
    ENUM_VALUE_OFFSET,
    ENUM_VALUE_SIZE_OFFSET,
    ENUM_VALUE_TYPE_OFFSET,
    GET_REPLY_VALUE_OFFSET,
    GET_VALUE_OFFSET,
    GET_VALUE_SIZE_OFFSET,
    GET_VALUE_TYPE_OFFSET,
    HV_DRV_VERSION,
    IP_ADAPTER_ID,
    IP_ADDR,
    IP_ADDR_FAMILY_OFFSET,
    IP_DHCP_ENABLED_OFFSET,
    IP_DNS_ADDR,
    IP_GATE_WAY,
    IP_SUB_NET,
    KVP_MSG_SIZE,
    KVP_OP_REGISTER,
    KVP_OP_REGISTER1,
    REGISTER_VERSION_OFFSET,
    KvpOp,
    RegType,
)
from hvguest.wire.status import HvStatus

HV_UTIL_NEGO_TIMEOUT = 55.0
# process_ob_ipinfo's order: a failing field ends the copy, so the order shows on failure.
IP_TO_HOST_FIELDS = (IP_ADDR, IP_SUB_NET, IP_GATE_WAY, IP_DNS_ADDR, IP_ADAPTER_ID)


class KvpKernel(UtilService):
    driver = Driver("hv_kvp", IcMsgType.KVPEXCHANGE, 4 * 4096, KVP_FW_VERSIONS, KVP_SRV_VERSIONS)

    def __init__(self, timers: TimerQueue, channel: HostChannel | None = None) -> None:
        super().__init__(timers, channel)
        self.dm_reg_value = 0
        self._host_nego = "not-started"
        self._nego_timer: Timer | None = None

    # -- host side -----------------------------------------------------------------
    def on_channel(self) -> None:
        if self.state < State.READY:
            # No daemon: the channel is left unread; a re-poll is scheduled once.
            if self._host_nego == "not-started" and self.channel.pending():
                self._host_nego = "in-progress"
                self._nego_timer = self.timers.call_later(HV_UTIL_NEGO_TIMEOUT, self.on_channel)
            return
        super().on_channel()

    def take_request(self, trans_id: int, length: int) -> bool:
        self.state = State.HOSTMSG_RECEIVED
        self.arm(HV_UTIL_TIMEOUT)
        self._send_key()
        return True

    def _answer_negotiate(self, trans_id: int, length: int) -> None:
        super()._answer_negotiate(trans_id, length)
        self._host_nego = "finished"

    def _invalid_kind(self, kind: int) -> None:
        self.klog("invalid msg type; packet dropped")

    def _send_key(self) -> None:
        # The whole message size is read, like the kernel does: bytes past the host's
        # packet are whatever the receive buffer still holds.
        host = bytes(self.recv_buffer[ICMSG_HDR_SIZE : ICMSG_HDR_SIZE + KVP_MSG_SIZE])
        self._send_to_daemon(kvp_host_to_daemon(host, skip_oversized=self.nls_skip_oversized))

    def respond(self, reply: bytes | None, error: int) -> None:
        """kvp_respond_to_host: convert the daemon's reply into the host's buffer."""
        txn = self.txn
        if txn is None:
            return
        if txn.raw is not None:
            self.txn = None
            txn.raw(reply)
            return
        buf = self.recv_buffer
        struct.pack_into("<I", buf, 20, error & 0xFFFFFFFF)
        op = buf[ICMSG_HDR_SIZE]
        if not error and reply is not None:
            if op == KvpOp.GET_IP_INFO:
                if not self._ip_to_host(reply):
                    struct.pack_into("<I", buf, 20, HV_E_FAIL)
            elif op in (KvpOp.SET_IP_INFO, KvpOp.SET, KvpOp.DELETE):
                pass
            else:
                self._strings_to_host(reply, op)
        self.txn = None
        self._send_buffer(txn.trans_id, txn.recv_len)

    def respond_status(self, error: int) -> None:
        self.respond(None, error)

    # Unlike kvp_kernel.kvp_daemon_to_host, the two converters below keep what the
    # kernel stores on a failed conversion (the units before the bad sequence, a size
    # computed from -EINVAL), so the host sees the exact bytes along with HV_E_FAIL.
    def _strings_to_host(self, reply: bytes, op: int) -> None:
        buf = self.recv_buffer
        base = ICMSG_HDR_SIZE
        keylen = 0
        if op == KvpOp.GET:
            vsize_off, vtype_off, value_off = (
                GET_VALUE_SIZE_OFFSET,
                GET_VALUE_TYPE_OFFSET,
                GET_VALUE_OFFSET,
            )
        else:
            vsize_off, vtype_off, value_off = (
                ENUM_VALUE_SIZE_OFFSET,
                ENUM_VALUE_TYPE_OFFSET,
                ENUM_VALUE_OFFSET,
            )
            units, ok = kernel_utf8_to_utf16_partial(reply[ENUM_KEY_OFFSET:], ENUM_KEY_MAX_UNITS)
            buf[base + ENUM_KEY_OFFSET : base + ENUM_KEY_OFFSET + len(units)] = units
            keylen = len(units) // 2 if ok else -errno.EINVAL
            struct.pack_into(
                "<I", buf, base + ENUM_KEY_SIZE_OFFSET, (2 * (keylen + 1)) & 0xFFFFFFFF
            )
        # Both GET and ENUMERATE take the value from the ENUMERATE slot (@532).
        units, ok = kernel_utf8_to_utf16_partial(
            reply[GET_REPLY_VALUE_OFFSET:], ENUM_VALUE_MAX_UNITS
        )
        buf[base + value_off : base + value_off + len(units)] = units
        valuelen = len(units) // 2 if ok else -errno.EINVAL
        struct.pack_into("<I", buf, base + vsize_off, (2 * (valuelen + 1)) & 0xFFFFFFFF)
        if keylen < 0 or valuelen < 0:
            struct.pack_into("<I", buf, 20, HV_E_FAIL)
        struct.pack_into("<I", buf, base + vtype_off, RegType.REG_SZ)

    def _ip_to_host(self, reply: bytes) -> bool:
        buf = self.recv_buffer
        for spec in IP_TO_HOST_FIELDS:
            units, ok = kernel_utf8_to_utf16_partial(reply[spec.daemon_offset :], spec.kernel_limit)
            start = ICMSG_HDR_SIZE + spec.host_offset
            buf[start : start + len(units)] = units
            if not ok:
                return False
        for offset in (IP_DHCP_ENABLED_OFFSET, IP_ADDR_FAMILY_OFFSET):
            buf[ICMSG_HDR_SIZE + offset - 2] = reply[offset]
        return True

    # -- daemon side ----------------------------------------------------------------
    def on_msg(self, data: bytes) -> int:
        if len(data) < KVP_MSG_SIZE:
            return -errno.EINVAL
        if self.state < State.READY:
            return self._handshake(data)
        if self.state < State.USERSPACE_REQ:
            return -errno.EINVAL  # nothing was sent: spurious or late reply
        self.state = State.USERSPACE_RECV
        if self.dm_reg_value == KVP_OP_REGISTER:
            error = HvStatus.HV_S_CONT if data[ENUM_KEY_OFFSET] == 0 else 0
        else:
            (error,) = struct.unpack_from("<I", data, 0)
        if self.cancel_timeout():
            self.respond(data, error)
            self.poll_wrapper()
        return 0

    def _handshake(self, data: bytes) -> int:
        op = data[0]
        if op not in (KVP_OP_REGISTER, KVP_OP_REGISTER1):
            self.klog(f"incompatible daemon (op {op})")
            return -errno.EINVAL
        self.dm_reg_value = op
        reply = bytearray(KVP_MSG_SIZE)
        reply[0] = op
        version = HV_DRV_VERSION.encode()
        reply[REGISTER_VERSION_OFFSET : REGISTER_VERSION_OFFSET + len(version)] = version
        # A send failure (echo still unread) is ignored by the driver.
        self.transport.send(bytes(reply), on_read=self._register_done)
        return 0

    def _register_done(self) -> None:
        if self._nego_timer is not None:
            self._nego_timer.cancel()
            self._nego_timer = None
        super()._register_done()
