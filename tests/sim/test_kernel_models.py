"""The simulator's kernel models, driven directly (no I/O, fake clock)."""

from __future__ import annotations

import errno
import os
import struct
from typing import Any

import pytest

from hvguest.sim.device import POLLERR, POLLHUP, POLLIN, POLLRDNORM, WOULD_BLOCK
from hvguest.sim.host import (
    HostReply,
    HostService,
    decode_kvp_enumerate,
    decode_kvp_get,
    decode_kvp_ip,
    decode_vss,
    fcopy_op_body,
    fcopy_start_body,
    fcopy_write_body,
    kvp_enumerate_body,
    kvp_get_body,
    kvp_ip_body,
    kvp_set_body,
    vss_body,
)
from hvguest.sim.kernel.fcopy import FcopyKernel
from hvguest.sim.kernel.kvp import KvpKernel
from hvguest.sim.kernel.service import State, UtilService
from hvguest.sim.kernel.timers import FakeClock, TimerQueue
from hvguest.sim.kernel.transport import UtilTransport
from hvguest.sim.kernel.vss import VssKernel
from hvguest.wire.kvp_kernel import kernel_utf8_to_utf16_partial as utf8_to_utf16
from hvguest.wire.kvp_kernel import kernel_utf16_to_utf8

HV_S_OK, HV_E_FAIL, HV_S_CONT = 0, 0x80004005, 0x80070103
KVP = 7432
D = 7  # the daemon's file handle


class Rig:
    """A kernel model, its host and a fake clock."""

    def __init__(self, cls: type[UtilService], name: str, scale: float = 1.0) -> None:
        self.clock = FakeClock()
        self.timers = TimerQueue(self.clock, scale=scale)
        self.kernel = cls(self.timers)
        self.transcript: list[HostReply] = []
        self.host = HostService(name, self.kernel.channel.host_send, self.timers,
                                transcript=self.transcript)
        self.kernel.channel.on_response = self.host.deliver
        self.host.start()
        self.dev = self.kernel.transport
        self.replies: list[HostReply] = []

    def request(self, op: str, body: bytes, decode=None) -> None:  # type: ignore[no-untyped-def]
        self.host.submit(op, {}, self.host.ic_payload(body), decode, self.replies.append)

    def read(self, size: int = 8192) -> bytes:
        got = self.dev.read(D, size)
        assert isinstance(got, bytes), got
        return got

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.timers.run_due()


def kvp_rig(scale: float = 1.0) -> Rig:
    rig = Rig(KvpKernel, "kvp", scale)
    assert rig.dev.open(D) == 0
    assert rig.dev.write(D, bytes([100]) + bytes(KVP - 1)) == KVP
    echo = rig.read()
    assert echo[0] == 100 and echo[4:8] == b"3.1\0" and len(echo) == KVP
    return rig


def reply_ok(request: bytes, *, key: bytes = b"", value: bytes = b"", at: int = 532) -> bytes:
    msg = bytearray(KVP)
    msg[20 : 20 + len(key)] = key
    msg[at : at + len(value)] = value
    return bytes(msg)


# -- hv_utils_transport ----------------------------------------------------------------
def test_transport_exclusive_open_and_release() -> None:
    t = UtilTransport("hv_x", lambda d: 0, lambda: None)
    assert t.open(1) == 0
    assert t.open(2) == -errno.EBUSY
    t.release(2)  # the failed opener closing changes nothing
    assert t.is_open
    t.release(1)
    assert t.open(3) == 0


def test_transport_read_semantics() -> None:
    resets: list[int] = []
    t = UtilTransport("hv_x", lambda d: 0, lambda: resets.append(1))
    assert t.send(b"x") == -errno.EINVAL  # nobody has it open
    t.open(1)
    assert t.read(1, 100) == WOULD_BLOCK
    assert t.poll(1) == 0
    assert t.send(b"hello") == 0
    assert t.send(b"again") == -errno.EFAULT  # one outbound message at most
    assert t.poll(1) == POLLIN | POLLRDNORM
    assert t.read(1, 4) == -errno.EINVAL  # too small: the message stays queued
    assert t.read(1, 5) == b"hello"
    t.send(b"dropped")
    t.release(1)
    assert resets == [1] and t.outmsg is None
    t.open(2)
    t.destroy()
    assert t.poll(2) == POLLERR | POLLHUP
    assert t.read(2, 100) == -errno.EBADF
    assert t.write(2, b"x") == -errno.EBADF
    assert t.open(3) == -errno.EBADF


# -- KVP ---------------------------------------------------------------------------------
def test_kvp_registration_rules() -> None:
    rig = Rig(KvpKernel, "kvp")
    rig.dev.open(D)
    assert rig.dev.write(D, bytes([100]) + bytes(100)) == -errno.EINVAL  # short
    assert rig.dev.write(D, bytes([5]) + bytes(KVP - 1)) == -errno.EINVAL  # wrong op
    rig.request("get", kvp_get_body(0, "k"))
    assert rig.dev.write(D, bytes([100]) + bytes(KVP - 1)) == KVP
    # Until the echo is read the channel is not drained: no request, no negotiation.
    assert rig.kernel.state == State.DEVICE_INIT
    assert rig.transcript == []
    rig.read()
    assert int(rig.kernel.state) == State.USERSPACE_REQ
    assert rig.transcript[0].op == "negotiate"
    assert rig.transcript[0].fields == {"framework": "3.0", "service": "4.0"}
    req = rig.read()
    assert req[0] == 0 and req[16:18] == b"k\0"


def test_kvp_set_conversions() -> None:
    rig = kvp_rig()
    rig.request("set", kvp_set_body(3, "ключ", "valeur \U0001f600"))
    msg = rig.read()
    assert (msg[0], msg[1]) == (1, 3)
    key = "ключ".encode()
    value = "valeur \U0001f600".encode()
    vtype, ksize, vsize = struct.unpack_from("<III", msg, 4)
    assert (vtype, ksize, vsize) == (0, len(key) + 1, len(value) + 1)
    assert msg[16 : 16 + len(key) + 1] == key + b"\0"
    assert msg[528 : 528 + len(value) + 1] == value + b"\0"
    assert rig.dev.write(D, bytes(KVP)) == KVP
    assert rig.replies[-1].status == HV_S_OK


@pytest.mark.parametrize(
    ("vtype", "value", "text"),
    [("REG_U32", 4294967295, b"4294967295"), ("REG_U64", 2**64 - 1, b"18446744073709551615")],
)
def test_kvp_integer_values_become_decimal(vtype: str, value: int, text: bytes) -> None:
    rig = kvp_rig()
    rig.request("set", kvp_set_body(0, "n", value, vtype))
    msg = rig.read()
    assert struct.unpack_from("<I", msg, 12)[0] == len(text) + 1
    assert msg[528 : 528 + len(text) + 1] == text + b"\0"


def test_kvp_get_value_comes_from_offset_532() -> None:
    rig = kvp_rig()
    rig.request("get", kvp_get_body(0, "k"), decode_kvp_get)
    rig.read()
    rig.dev.write(D, reply_ok(b"", value=b"abc", at=528))  # stops before 532
    assert rig.replies[-1].fields["value"] == ""
    rig.request("get", kvp_get_body(0, "k"), decode_kvp_get)
    rig.read()
    rig.dev.write(D, reply_ok(b"", value=b"at532"))
    got = rig.replies[-1]
    assert got.status == HV_S_OK
    assert got.fields["value"] == "at532"
    assert got.fields["value_size"] == 2 * 6 and got.fields["value_type"] == 1


def test_kvp_status_is_first_four_bytes() -> None:
    rig = kvp_rig()
    rig.request("get", kvp_get_body(0, "k"), decode_kvp_get)
    rig.read()
    rig.dev.write(D, struct.pack("<I", HV_S_CONT) + bytes(KVP - 4))
    assert rig.replies[-1].status == HV_S_CONT


def test_kvp_enumerate_truncates_and_fails_bad_utf8() -> None:
    rig = kvp_rig()
    rig.request("enum", kvp_enumerate_body(1, 7), decode_kvp_enumerate)
    msg = rig.read()
    assert msg[0] == 3 and struct.unpack_from("<I", msg, 4)[0] == 7
    rig.dev.write(D, reply_ok(b"", key=b"k" * 400, value=b"v" * 2000))
    f = rig.replies[-1].fields
    assert rig.replies[-1].status == HV_S_OK
    assert f["key"] == "k" * 254 and f["key_size"] == 2 * 255
    assert f["value"] == "v" * 1022 and f["value_size"] == 2 * 1023
    rig.request("enum", kvp_enumerate_body(1, 8), decode_kvp_enumerate)
    rig.read()
    rig.dev.write(D, reply_ok(b"", key=b"ok", value=b"bad \xff"))
    assert rig.replies[-1].status == HV_E_FAIL


def test_kvp_timeout_and_late_reply() -> None:
    rig = kvp_rig(scale=0.01)  # 30 s becomes 0.3 s
    rig.request("get", kvp_get_body(0, "k"))
    rig.read()
    rig.advance(0.2)
    assert rig.replies == []
    rig.advance(0.2)
    assert rig.replies[-1].status == HV_E_FAIL
    assert rig.kernel.state == State.READY
    assert rig.dev.write(D, bytes(KVP)) == -errno.EINVAL  # late: nothing outstanding


def test_kvp_late_reply_answers_the_next_request() -> None:
    rig = kvp_rig()
    rig.request("get", kvp_get_body(0, "first"), decode_kvp_get)
    rig.read()
    rig.advance(31)
    rig.request("get", kvp_get_body(0, "second"), decode_kvp_get)
    # The daemon's late answer to "first" arrives while "second" is outstanding.
    rig.dev.write(D, reply_ok(b"", value=b"for-first"))
    assert rig.replies[-1].fields["value"] == "for-first"
    assert rig.dev.read(D, KVP)[16:23] == b"second\0"  # type: ignore[index]


def test_kvp_close_fails_pending_and_resets() -> None:
    rig = kvp_rig()
    rig.request("get", kvp_get_body(0, "k"))
    rig.dev.release(D)
    assert rig.replies[-1].status == HV_E_FAIL
    assert rig.kernel.state == State.DEVICE_INIT
    assert rig.dev.outmsg is None
    # A new daemon must register again before anything reaches it.
    rig.request("get", kvp_get_body(0, "k2"))
    assert rig.dev.open(D + 1) == 0
    assert rig.dev.write(D + 1, bytes(KVP)) == -errno.EINVAL  # op 0 is not a registration
    rig.dev.write(D + 1, bytes([100]) + bytes(KVP - 1))
    assert rig.dev.read(D + 1, KVP)[0] == 100  # type: ignore[index]
    assert rig.dev.read(D + 1, KVP)[16:19] == b"k2\0"  # type: ignore[index]


def test_kvp_unregistered_host_request_waits() -> None:
    rig = Rig(KvpKernel, "kvp")
    rig.request("get", kvp_get_body(0, "k"))
    rig.advance(120)  # the 55 s re-poll does nothing without a daemon
    assert rig.transcript == [] and rig.replies == []


def test_kvp_ip_info_translation() -> None:
    rig = kvp_rig()
    rig.request("ip", kvp_ip_body(4, "00:15:5D:00:00:01", addr_family=1), decode_kvp_ip)
    msg = rig.read()
    assert msg[0] == 4 and msg[4:22] == b"00:15:5D:00:00:01\0" and msg[260] == 1
    reply = bytearray(KVP)
    reply[4:21] = b"00:15:5D:00:00:01"
    reply[260], reply[261] = 3, 1
    reply[262:272] = b"192.0.2.10"
    reply[2310:2323] = b"255.255.255.0"
    reply[4358:4368] = b"192.0.2.1;"
    reply[5382:5390] = b"9.9.9.9;"
    rig.dev.write(D, bytes(reply))
    got = rig.replies[-1]
    assert got.status == HV_S_OK
    assert got.fields == {
        "adapter_id": "00:15:5D:00:00:01", "ip_addr": "192.0.2.10",
        "sub_net": "255.255.255.0", "gate_way": "192.0.2.1;", "dns_addr": "9.9.9.9;",
        "addr_family": 3, "dhcp_enabled": 1,
    }
    rig.request("ip", kvp_ip_body(5, "{guid}", addr_family=1, dhcp_enabled=False,
                                  ip_addr="10.0.0.2", sub_net="255.0.0.0", gate_way="10.0.0.1",
                                  dns_addr="10.0.0.53"))
    msg = rig.read()
    assert msg[0] == 5 and msg[4:11] == b"{guid}\0" and msg[262:271] == b"10.0.0.2\0"
    assert msg[4358:4367] == b"10.0.0.1\0" and msg[5382:5392] == b"10.0.0.53\0"


def test_kvp_raw_injection() -> None:
    rig = kvp_rig(scale=0.01)
    got: list[bytes | None] = []
    rig.kernel.inject_raw(b"\x03\xc8" + bytes(98), got.append)  # pool 200, 100 bytes
    assert rig.read() == b"\x03\xc8" + bytes(98)
    rig.dev.write(D, b"\x01" * KVP)
    assert got == [b"\x01" * KVP]
    rig.kernel.inject_raw(b"x", got.append)
    rig.read()
    rig.advance(1)
    assert got[-1] is None and rig.kernel.state == State.READY


# -- VSS ---------------------------------------------------------------------------------
def vss_rig(scale: float = 1.0) -> Rig:
    rig = Rig(VssKernel, "vss", scale)
    rig.dev.open(D)
    assert rig.dev.write(D, bytes([129]) + bytes(3)) == -errno.EINVAL  # must be 12 bytes
    assert rig.dev.write(D, bytes([129]) + bytes(11)) == 12
    assert rig.read(12) == struct.pack("<I", 129)
    return rig


def test_vss_in_kernel_ops_and_no_daemon() -> None:
    rig = Rig(VssKernel, "vss")
    rig.request("dm", vss_body(3, flags=0xFF), decode_vss)
    rig.request("freeze", vss_body(5))
    assert rig.transcript[0].fields["service"] == "5.0"
    assert rig.replies[0].status == HV_S_OK and rig.replies[0].fields["flags"] == 0
    assert rig.replies[1].status == HV_E_FAIL  # no daemon: failed at once


def test_vss_freeze_timeout_is_900s_and_others_30s() -> None:
    rig = vss_rig()
    rig.request("thaw", vss_body(6))
    assert rig.read(12) == bytes([6]) + bytes(11)
    rig.advance(31)
    assert rig.replies[-1].status == HV_E_FAIL
    rig.request("freeze", vss_body(5))
    rig.read(12)
    rig.advance(899)
    assert len(rig.replies) == 1
    rig.advance(2)
    assert rig.replies[-1].status == HV_E_FAIL


def test_vss_hot_backup_flags_quirk() -> None:
    rig = vss_rig()
    rig.request("hb", vss_body(2, flags=0), decode_vss)
    rig.read(12)
    rig.dev.write(D, bytes(12))  # success: byte 0 is 0, flag not set
    assert rig.replies[-1].fields["flags"] == 0
    rig.request("hb", vss_body(2, flags=0), decode_vss)
    rig.read(12)
    rig.dev.write(D, bytes([2]) + bytes(11))  # status 2: byte 0 == HOT_BACKUP
    assert rig.replies[-1].status == 2 and rig.replies[-1].fields["flags"] == 5


def test_vss_registration_during_transaction_rejected() -> None:
    rig = vss_rig()
    rig.request("freeze", vss_body(5))
    rig.read(12)
    assert rig.dev.write(D, bytes([129]) + bytes(11)) == -errno.EINVAL
    assert rig.dev.write(D, bytes(12)) == 12
    assert rig.replies[-1].status == HV_S_OK
    assert rig.dev.write(D, bytes(12)) == -errno.EINVAL  # nothing outstanding


# -- legacy FCOPY ------------------------------------------------------------------------
def fcopy_rig() -> Rig:
    rig = Rig(FcopyKernel, "fcopy")
    rig.dev.open(D)
    assert rig.dev.write(D, struct.pack("<i", 2)) == -errno.EINVAL
    assert rig.dev.write(D, struct.pack("<i", 1)) == 4
    assert rig.read(6196) == struct.pack("<I", 1)
    return rig


def test_fcopy_messages() -> None:
    rig = fcopy_rig()
    assert rig.transcript[0].fields == {"framework": "3.0", "service": "1.1"}
    rig.request("start", fcopy_start_body("naïve.txt", "/tmp/dir", 3, 12345))
    start = rig.read(6196)
    assert len(start) == 1088
    assert start[36 : 36 + 11] == "naïve.txt".encode() + b"\0"
    assert start[556:565] == b"/tmp/dir\0"
    assert struct.unpack_from("<IQ", start, 1076) == (3, 12345)
    assert rig.dev.write(D, bytes(8)) == -errno.EINVAL  # replies are 4 bytes
    rig.dev.write(D, struct.pack("<I", 0x80070050))
    assert rig.replies[-1].status == 0x80070050
    rig.request("write", fcopy_write_body(6144, b"abc"))
    write = rig.read(6196)
    assert len(write) == 6196 and struct.unpack_from("<QI", write, 40) == (6144, 3)
    rig.dev.write(D, bytes(4))
    rig.request("complete", fcopy_op_body(2))
    done = rig.read(6196)
    # The driver forwards the host payload length (28 + 36) from the fcopy header on.
    assert len(done) == 64 and done[0] == 2


def test_fcopy_without_daemon_fails_at_once() -> None:
    rig = Rig(FcopyKernel, "fcopy")
    rig.request("start", fcopy_start_body("a", "/tmp", 0, 1))
    assert rig.replies[-1].status == HV_E_FAIL


# -- negotiation and string conversions ---------------------------------------------------
def test_negotiation_failure_returns_zero_counts() -> None:
    from hvguest.wire.icmsg import IcVersion, build_negotiate_request

    rig = Rig(VssKernel, "vss")
    rig.host.submit("nego", {}, build_negotiate_request([IcVersion(1, 0)], [IcVersion(5, 0)]),
                    lambda p: {"counts": p[28:32].hex()}, rig.replies.append)
    assert rig.replies[-1].fields["counts"] == "00000000"


def utf16_to_utf8(data: bytes, inlen: int, maxout: int) -> bytes:
    """Host UTF-16 -> UTF-8 as the simulator's kernel models convert it by default."""
    return kernel_utf16_to_utf8(data, inlen, maxout, skip_oversized=UtilService.nls_skip_oversized)


def test_utf16_to_utf8_quirks() -> None:
    lone = "a".encode("utf-16-le") + b"\x00\xd8" + "b".encode("utf-16-le") + b"\x00\xdc"
    assert utf16_to_utf8(lone, 100, 100) == b"ab"  # lone surrogates vanish
    # "é" (2 bytes) no longer fits in 1 byte, but the later "x" still does.
    assert utf16_to_utf8("aéx".encode("utf-16-le"), 10, 2) == b"ax"
    assert utf16_to_utf8("abc\0def".encode("utf-16-le"), 10, 10) == b"abc"
    assert utf16_to_utf8("abcdef".encode("utf-16-le"), 3, 10) == b"abc"


def test_utf8_to_utf16_quirks() -> None:
    assert utf8_to_utf16("ab\U0001f600".encode(), 3) == ("ab".encode("utf-16-le"), True)
    assert utf8_to_utf16(b"ab\xc0\x80", 10) == ("ab".encode("utf-16-le"), False)  # overlong
    assert utf8_to_utf16(b"\xed\xa0\x80", 10)[1] is False  # encoded surrogate
    assert utf8_to_utf16(b"abc\xff", 3) == ("abc".encode("utf-16-le"), True)  # cut first


# -- UIO FCOPY channel -------------------------------------------------------------------
class UioGuest:
    """Plays the daemon: maps the ring file, reads RX, answers on TX, signals."""

    def __init__(self, uio: Any) -> None:
        import mmap

        from hvguest.sim.kernel.ring import Ring

        self.uio = uio
        self.fd = os.open(uio.ring_path, os.O_RDWR)
        self.map = mmap.mmap(self.fd, 2 * uio.ring_size)
        view = memoryview(self.map)
        self.tx = Ring(view[: uio.ring_size])
        self.rx = Ring(view[uio.ring_size :])
        self.dev = uio.device
        assert self.dev.open(D) == 0

    def take(self) -> tuple[int, bytes] | None:
        """Consume RX directly (the ring's consumer side is symmetrical)."""
        got = self.rx.read_packet()
        return None if got is None else (got[1], got[2])

    def answer(self, payload: bytes, status: int = 0) -> None:
        out = bytearray(payload)
        struct.pack_into("<I", out, 20, status)
        out[25] = 5
        assert self.tx.write_packet(bytes(out), 0xFFFFFFFFFFFFFFFF)
        assert self.dev.write(D, struct.pack("<i", 1)) == 4  # unmask + signal

    def close(self) -> None:
        self.dev.release(D)
        for ring in (self.tx, self.rx):
            ring.release()
        self.map.close()
        os.close(self.fd)


def uio_rig() -> tuple[Rig, Any, UioGuest]:
    from hvguest.sim.kernel.uio import UioFcopy

    clock = FakeClock()
    timers = TimerQueue(clock)
    uio = UioFcopy(timers)
    rig = Rig.__new__(Rig)
    rig.clock, rig.timers, rig.transcript, rig.replies = clock, timers, [], []
    rig.host = HostService("fcopy", uio.host_send, timers, transcript=rig.transcript,
                           timeout=60)
    uio.on_response = rig.host.deliver
    uio.on_connect = rig.host.reopen
    uio.on_disconnect = lambda: rig.host.abort("channel_closed")
    guest = UioGuest(uio)
    return rig, uio, guest


def test_uio_interrupts_and_irqcontrol() -> None:
    rig, uio, guest = uio_rig()
    try:
        # Open connected the channel and masked RX: the NEGOTIATE is queued silently.
        assert uio.connected and guest.rx.interrupt_mask == 1
        assert guest.dev.read(D, 4) == WOULD_BLOCK
        assert guest.dev.read(D, 8) == -errno.EINVAL
        assert guest.dev.write(D, b"\x01") == -errno.EINVAL
        nego = guest.take()
        assert nego is not None and nego[1][12] == 0  # icmsgtype NEGOTIATE
        guest.answer(nego[1])
        assert rig.transcript[0].op == "negotiate" and uio.signals == 1
        # RX is now unmasked: the next host packet raises an interrupt and masks it.
        rig.host.submit("start", {}, rig.host.ic_payload(fcopy_start_body("f", "/t", 0, 1)),
                        None, rig.replies.append)
        assert guest.rx.interrupt_mask == 1
        assert guest.dev.poll(D) == POLLIN | POLLRDNORM
        assert guest.dev.read(D, 4) == struct.pack("<I", 1)
        assert guest.dev.read(D, 4) == WOULD_BLOCK
        tid, payload = guest.take()  # type: ignore[misc]
        assert payload[12] == 7 and payload[28] == 0  # FCOPY START
        assert payload[28 + 36 : 28 + 38] == "f".encode("utf-16-le")
        guest.answer(payload, 0x80070050)
        assert rig.replies[-1].status == 0x80070050
        assert guest.dev.write(D, struct.pack("<i", 0)) == 4
        assert guest.rx.interrupt_mask == 1
    finally:
        guest.close()
        uio.close()
    assert not uio.connected


def test_uio_ring_wraps_and_keeps_one_byte_free() -> None:
    rig, uio, guest = uio_rig()
    try:
        nego = guest.take()
        assert nego is not None
        guest.answer(nego[1])
        data = bytes(range(256)) * 24
        for i in range(12):  # 6 KiB fragments through a 16 KiB data area
            body = fcopy_write_body(i * 6144, data)
            rig.host.submit("write", {}, rig.host.ic_payload(body), None, rig.replies.append)
            got = guest.take()
            assert got is not None
            assert got[1][28 + 52 : 28 + 52 + 6144] == data
            guest.answer(got[1])
        assert len(rig.replies) == 12 and {r.status for r in rig.replies} == {0}
        # NEGOTIATE (72 bytes in the ring) then 12 packets of 6248 (descriptor, padded
        # payload, trailer): the indices wrapped 4 times.
        assert guest.rx.read_index == guest.rx.write_index == (72 + 12 * 6248) % 16384
        big = b"\x00" * (uio.ring_size - 4096 - 8)  # exactly the data area: never fits
        assert not uio.rx.write_raw(big)
    finally:
        guest.close()
        uio.close()


def test_uio_sysfs_tree() -> None:
    from hvguest.sim.kernel.uio import FCOPY_CLASS, FCOPY_INSTANCE, UioFcopy

    uio = UioFcopy(TimerQueue(FakeClock()), ring_size=0x4000)
    try:
        tree = uio.fake_sys()
        dev = f"bus/vmbus/devices/{FCOPY_INSTANCE}"
        assert tree[f"{dev}/class_id"] == f"{{{FCOPY_CLASS}}}\n"
        assert tree[f"{dev}/uio/uio0/maps/map0/size"] == "0x0000000000008000\n"
        assert tree[f"{dev}/uio/uio0/maps/map0/name"] == "txrx_rings\n"
        assert os.path.getsize(uio.ring_path) == 0x8000
        assert "bus/vmbus/drivers/uio_hv_generic/new_id" in tree
    finally:
        uio.close()


def test_suspend_fakes_thaw_and_forces_ready() -> None:
    rig = vss_rig()
    rig.request("freeze", vss_body(5))
    rig.read(12)
    rig.kernel.suspend()
    rig.host.reset_channel("suspended")
    assert rig.replies[-1].status is None and rig.replies[-1].fields == {"suspended": True}
    assert rig.read(12) == bytes([6]) + bytes(11)  # the fake THAW
    assert rig.kernel.state == State.READY
    assert rig.dev.write(D, bytes(12)) == -errno.EINVAL  # nothing outstanding any more
    assert rig.transcript[-1].op == "negotiate" and rig.transcript[-1].status == 0


def test_suspend_fakes_fcopy_cancel() -> None:
    rig = fcopy_rig()
    rig.request("start", fcopy_start_body("a", "/tmp", 0, 1))
    rig.read(6196)
    rig.kernel.suspend()
    assert rig.read(6196) == struct.pack("<I", 3) + bytes(32)
    assert rig.dev.write(D, bytes(4)) == -errno.EINVAL


def test_kvp_unread_message_blocks_the_next_request() -> None:
    rig = kvp_rig()
    rig.request("get", kvp_get_body(0, "first"))  # the daemon never reads it
    rig.advance(31)
    assert rig.replies[-1].status == HV_E_FAIL
    rig.request("get", kvp_get_body(0, "second"))
    # The first message still occupies the transport's only slot: failed at once.
    assert rig.replies[-1].status == HV_E_FAIL and len(rig.replies) == 2
    assert rig.kernel.state == State.READY
    assert rig.read()[16:22] == b"first\0"
