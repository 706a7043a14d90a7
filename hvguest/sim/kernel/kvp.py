"""hv_kvp: the KVP driver between the host's UTF-16 messages and the daemon's UTF-8 ones.

Host layout = daemon layout (``hv_kvp_msg``, 7432 bytes) at IC offset 28, except the
IP operations, whose host form (``hv_kvp_ip_msg``) is 2 bytes shorter in front.
Only registration op 100 (or legacy 4) is accepted before READY; the channel is not
read at all until the daemon has read the registration echo.
"""

from __future__ import annotations

import errno
import struct

from hvguest.sim.kernel.channel import (
    HV_E_FAIL,
    HV_S_CONT,
    ICMSG_HDR,
    ICMSGTYPE_KVPEXCHANGE,
    HostChannel,
)
from hvguest.sim.kernel.nls import cstr, utf8_to_utf16, utf16_to_utf8
from hvguest.sim.kernel.service import HV_UTIL_TIMEOUT, State, Txn, UtilService
from hvguest.sim.kernel.timers import Timer, TimerQueue

KVP_MSG_SIZE = 7432
HV_UTIL_NEGO_TIMEOUT = 55.0
HV_DRV_VERSION = b"3.1"

OP_GET, OP_SET, OP_DELETE, OP_ENUMERATE, OP_GET_IP_INFO, OP_SET_IP_INFO = range(6)
OP_REGISTER = 4
OP_REGISTER1 = 100
REG_SZ, REG_U32, REG_U64 = 1, 4, 8

MAX_KEY = 512
MAX_VALUE = 2048
MAX_IP_ADDR_SIZE = 1024
MAX_GATEWAY_SIZE = 512
MAX_ADAPTER_ID_SIZE = 128

# Offsets inside hv_kvp_msg (both sides) -----------------------------------
GETSET_TYPE, GETSET_KSIZE, GETSET_VSIZE, GETSET_KEY, GETSET_VALUE = 4, 8, 12, 16, 528
ENUM_INDEX, ENUM_TYPE, ENUM_KSIZE, ENUM_VSIZE, ENUM_KEY, ENUM_VALUE = 4, 8, 12, 16, 20, 532
DEL_KSIZE, DEL_KEY = 4, 8
# hv_kvp_ipaddr_value inside the daemon's hv_kvp_msg (body at 4) and the host's
# hv_kvp_ip_msg (body at 2): (field, size in bytes).
IP_FIELDS = {
    "adapter_id": (0, 256),
    "addr_family": (256, 1),
    "dhcp_enabled": (257, 1),
    "ip_addr": (258, 2048),
    "sub_net": (2306, 2048),
    "gate_way": (4354, 1024),
    "dns_addr": (5378, 2048),
}
DAEMON_IP_BASE = 4
HOST_IP_BASE = 2


def ip_off(field: str, *, host: bool) -> int:
    return IP_FIELDS[field][0] + (HOST_IP_BASE if host else DAEMON_IP_BASE)


class KvpKernel(UtilService):
    device_name = "hv_kvp"
    icmsgtype = ICMSGTYPE_KVPEXCHANGE
    recv_size = 4 * 4096
    fw_versions = [0x30000, 0x10000]
    srv_versions = [0x40000, 0x30000, 0x10000]

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
        while self.state == State.READY:
            if self._start_raw():
                return
            got = self._take_packet()
            if got is None:
                return
            trans_id, length = got
            if length < ICMSG_HDR:
                self.klog(f"packet length too small: {length}")
                continue
            if self.is_negotiate(length):
                self._answer_negotiate(trans_id, length)
                self._host_nego = "finished"
                continue
            if self.recv_buffer[12] | (self.recv_buffer[13] << 8) != ICMSGTYPE_KVPEXCHANGE:
                self.klog("invalid msg type; packet dropped")
                continue
            self.txn = Txn(trans_id, length)
            self.state = State.HOSTMSG_RECEIVED
            self.arm(HV_UTIL_TIMEOUT)
            self._send_key()
            return

    def _send_key(self) -> None:
        host = memoryview(self.recv_buffer)[ICMSG_HDR:]
        op, pool = host[0], host[1]
        msg = bytearray(KVP_MSG_SIZE)
        msg[0], msg[1] = op, pool
        if op == OP_SET_IP_INFO or op == OP_GET_IP_INFO:
            self._ip_to_daemon(bytes(host), msg, op)
        elif op == OP_SET:
            vtype, _ksize, vsize = struct.unpack_from("<III", host, GETSET_TYPE)
            if vtype == REG_SZ:
                text = utf16_to_utf8(bytes(host[GETSET_VALUE:]), vsize, MAX_VALUE - 1)
            elif vtype == REG_U32:
                text = str(struct.unpack_from("<I", host, GETSET_VALUE)[0]).encode()
            elif vtype == REG_U64:
                text = str(struct.unpack_from("<Q", host, GETSET_VALUE)[0]).encode()
            else:
                text = None
            if text is not None:
                msg[GETSET_VALUE : GETSET_VALUE + len(text)] = text
                struct.pack_into("<I", msg, GETSET_VSIZE, len(text) + 1)
            self._key_to_daemon(bytes(host), msg, GETSET_KSIZE, GETSET_KEY)
        elif op == OP_GET:
            self._key_to_daemon(bytes(host), msg, GETSET_KSIZE, GETSET_KEY)
        elif op == OP_DELETE:
            self._key_to_daemon(bytes(host), msg, DEL_KSIZE, DEL_KEY)
        elif op == OP_ENUMERATE:
            msg[ENUM_INDEX : ENUM_INDEX + 4] = host[ENUM_INDEX : ENUM_INDEX + 4]
        self.state = State.USERSPACE_REQ
        if self.transport.send(bytes(msg)) != 0:
            self.klog("failed to communicate to the daemon")
            if self.cancel_timeout():
                self.respond(None, HV_E_FAIL)
                self.state = State.READY

    @staticmethod
    def _key_to_daemon(host: bytes, msg: bytearray, size_off: int, key_off: int) -> None:
        (ksize,) = struct.unpack_from("<I", host, size_off)
        key = utf16_to_utf8(host[key_off:], ksize, MAX_KEY - 1)
        msg[key_off : key_off + len(key)] = key
        struct.pack_into("<I", msg, size_off, len(key) + 1)

    @staticmethod
    def _ip_to_daemon(host: bytes, msg: bytearray, op: int) -> None:
        fields = [("adapter_id", MAX_ADAPTER_ID_SIZE, MAX_ADAPTER_ID_SIZE)]
        if op == OP_SET_IP_INFO:
            fields += [
                ("ip_addr", MAX_IP_ADDR_SIZE, MAX_IP_ADDR_SIZE),
                ("sub_net", MAX_IP_ADDR_SIZE, MAX_IP_ADDR_SIZE),
                ("gate_way", MAX_GATEWAY_SIZE, MAX_GATEWAY_SIZE),
                ("dns_addr", MAX_IP_ADDR_SIZE, MAX_IP_ADDR_SIZE),
            ]
            msg[ip_off("dhcp_enabled", host=False)] = host[ip_off("dhcp_enabled", host=True)]
        for name, inlen, maxout in fields:
            text = utf16_to_utf8(host[ip_off(name, host=True) :], inlen, maxout)
            start = ip_off(name, host=False)
            msg[start : start + len(text)] = text
        msg[ip_off("addr_family", host=False)] = host[ip_off("addr_family", host=True)]

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
        op = buf[ICMSG_HDR]
        if not error and reply is not None:
            if op == OP_GET_IP_INFO:
                if not self._ip_to_host(reply):
                    struct.pack_into("<I", buf, 20, HV_E_FAIL)
            elif op in (OP_SET_IP_INFO, OP_SET, OP_DELETE):
                pass
            else:
                self._strings_to_host(reply, op)
        self.txn = None
        self._send_buffer(txn.trans_id, txn.recv_len)

    def respond_status(self, error: int) -> None:
        self.respond(None, error)

    def _strings_to_host(self, reply: bytes, op: int) -> None:
        buf = self.recv_buffer
        base = ICMSG_HDR
        keylen = 0
        if op == OP_GET:
            vsize_off, vtype_off, value_off = GETSET_VSIZE, GETSET_TYPE, GETSET_VALUE
        else:
            vsize_off, vtype_off, value_off = ENUM_VSIZE, ENUM_TYPE, ENUM_VALUE
            units, ok = utf8_to_utf16(cstr(reply, ENUM_KEY), MAX_KEY // 2 - 2)
            buf[base + ENUM_KEY : base + ENUM_KEY + len(units)] = units
            keylen = len(units) // 2 if ok else -errno.EINVAL
            struct.pack_into("<I", buf, base + ENUM_KSIZE, (2 * (keylen + 1)) & 0xFFFFFFFF)
        # Both GET and ENUMERATE take the value from the ENUMERATE slot (@532).
        units, ok = utf8_to_utf16(cstr(reply, ENUM_VALUE), MAX_VALUE // 2 - 2)
        buf[base + value_off : base + value_off + len(units)] = units
        valuelen = len(units) // 2 if ok else -errno.EINVAL
        struct.pack_into("<I", buf, base + vsize_off, (2 * (valuelen + 1)) & 0xFFFFFFFF)
        if keylen < 0 or valuelen < 0:
            struct.pack_into("<I", buf, 20, HV_E_FAIL)
        struct.pack_into("<I", buf, base + vtype_off, REG_SZ)

    def _ip_to_host(self, reply: bytes) -> bool:
        buf = self.recv_buffer
        for name, maxout in (
            ("ip_addr", MAX_IP_ADDR_SIZE),
            ("sub_net", MAX_IP_ADDR_SIZE),
            ("gate_way", MAX_GATEWAY_SIZE),
            ("dns_addr", MAX_IP_ADDR_SIZE),
            ("adapter_id", MAX_ADAPTER_ID_SIZE),
        ):
            units, ok = utf8_to_utf16(cstr(reply, ip_off(name, host=False)), maxout)
            start = ICMSG_HDR + ip_off(name, host=True)
            buf[start : start + len(units)] = units
            if not ok:
                return False
        for name in ("dhcp_enabled", "addr_family"):
            buf[ICMSG_HDR + ip_off(name, host=True)] = reply[ip_off(name, host=False)]
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
        if self.dm_reg_value == OP_REGISTER:
            error = HV_S_CONT if data[ENUM_KEY] == 0 else 0
        else:
            (error,) = struct.unpack_from("<I", data, 0)
        if self.cancel_timeout():
            self.respond(data, error)
            self.poll_wrapper()
        return 0

    def _handshake(self, data: bytes) -> int:
        op = data[0]
        if op not in (OP_REGISTER, OP_REGISTER1):
            self.klog(f"incompatible daemon (op {op})")
            return -errno.EINVAL
        self.dm_reg_value = op
        reply = bytearray(KVP_MSG_SIZE)
        reply[0] = op
        reply[4 : 4 + len(HV_DRV_VERSION)] = HV_DRV_VERSION
        # A send failure (echo still unread) is ignored by the driver.
        self.transport.send(bytes(reply), on_read=self._register_done)
        return 0

    def _register_done(self) -> None:
        if self._nego_timer is not None:
            self._nego_timer.cancel()
            self._nego_timer = None
        self.klog("userspace daemon registered")
        self.poll_wrapper()
