"""Golden tables: every codec against bytes built from the offsets in protocol.md.

Each case is checked both ways (encode == bytes, decode(bytes) == object) and field by
field: every documented field at its offset, every other byte zero.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from wire_golden import assert_fields, layout, u8, u16, u32, u64, z8, z16

from hvguest.wire import fcopy, icmsg, kvp, pool, vmbus, vss
from hvguest.wire.status import HvStatus

KVP = kvp.KVP_MSG_SIZE

# (object, size, {offset: bytes}, decoder)
KVP_REQUESTS: list[tuple[Any, dict[int, bytes]]] = [
    (kvp.KvpGet(kvp.KvpPool.GUEST, "key"), {0: u8(0), 1: u8(1), 8: u32(4), 16: z8("key")}),
    (
        kvp.KvpSet(kvp.KvpPool.AUTO_EXTERNAL, "k", "v€"),
        {0: u8(1), 1: u8(3), 8: u32(2), 12: u32(5), 16: z8("k"), 528: z8("v€")},
    ),
    (kvp.KvpSet(kvp.KvpPool.EXTERNAL, "k", ""), {0: u8(1), 8: u32(2), 12: u32(1), 16: z8("k")}),
    (kvp.KvpDelete(kvp.KvpPool.EXTERNAL, "gone"), {0: u8(2), 4: u32(5), 8: z8("gone")}),
    (kvp.KvpEnumerate(kvp.KvpPool.AUTO, 7), {0: u8(3), 1: u8(2), 4: u32(7)}),
    (
        kvp.KvpGetIpInfo(kvp.KvpPool.EXTERNAL, "00:15:5D:00:00:01", kvp.ADDR_FAMILY_IPV4),
        {0: u8(4), 4: z8("00:15:5D:00:00:01"), 260: u8(1)},
    ),
    (
        kvp.KvpSetIpInfo(
            kvp.KvpPool.EXTERNAL,
            "{e7f4a0a9-455a-964d-b827-8a841e8c03e6}",
            3,
            True,
            "192.0.2.10;2001:db8::10",
            "255.255.255.0;64",
            "192.0.2.1",
            "192.0.2.53",
        ),
        {
            0: u8(5),
            4: z8("{e7f4a0a9-455a-964d-b827-8a841e8c03e6}"),
            260: u8(3),
            261: u8(1),
            262: z8("192.0.2.10;2001:db8::10"),
            2310: z8("255.255.255.0;64"),
            4358: z8("192.0.2.1"),
            5382: z8("192.0.2.53"),
        },
    ),
    (kvp.KvpRegister("3.1"), {0: u8(100), 4: z8("3.1")}),
]


@pytest.mark.parametrize(("request_obj", "fields"), KVP_REQUESTS, ids=lambda v: type(v).__name__)
def test_kvp_request_golden(request_obj: Any, fields: dict[int, bytes]) -> None:
    expected = layout(KVP, fields)
    assert request_obj.encode() == expected
    assert kvp.decode_kvp_request(expected) == request_obj
    assert_fields(request_obj.encode(), KVP, fields)


def test_kvp_register_msg() -> None:
    assert_fields(kvp.KVP_REGISTER_MSG, KVP, {0: u8(100)})


def test_kvp_reply_copies_request_and_sets_status() -> None:
    request = kvp.KvpGet(1, "missing").encode()
    reply = kvp.kvp_reply(request, HvStatus.HV_S_CONT)
    assert reply == u32(0x80070103) + request[4:]


def test_kvp_reply_pads_or_cuts_malformed_requests() -> None:
    assert kvp.kvp_reply(b"\x07", HvStatus.HV_E_FAIL) == u32(0x80004005) + bytes(KVP - 4)
    long = bytes(range(256)) * 40
    reply = kvp.kvp_reply(long, 0)
    assert len(reply) == KVP and reply[4:] == long[4:KVP]


def test_kvp_reply_status_as_c_int() -> None:
    assert kvp.kvp_reply(bytes(KVP), -1)[:4] == b"\xff\xff\xff\xff"


def test_kvp_enumerate_reply_golden() -> None:
    request = kvp.KvpEnumerate(1, 4).encode()
    reply = kvp.kvp_enumerate_reply(request, "OSName", "Debian GNU/Linux")
    assert_fields(reply, KVP, {0: u32(0), 4: u32(4), 20: z8("OSName"), 532: z8("Debian GNU/Linux")})
    decoded = kvp.decode_kvp_reply(kvp.KvpOp.ENUMERATE, reply)
    assert decoded == kvp.KvpReply(0, key="OSName", value="Debian GNU/Linux")


def test_kvp_enumerate_reply_zero_fills_stale_request_bytes() -> None:
    dirty = bytearray(kvp.KvpEnumerate(1, 0).encode())
    dirty[20:2580] = b"x" * 2560
    reply = kvp.kvp_enumerate_reply(bytes(dirty), "a", "b")
    assert reply[20:532] == z8("a").ljust(512, b"\0")
    assert reply[532:2580] == z8("b").ljust(2048, b"\0")


def test_kvp_get_reply_puts_value_where_the_kernel_reads_it() -> None:
    request = kvp.KvpGet(0, "VirtualMachineName").encode()
    reply = kvp.kvp_get_reply(request, "vm1")
    assert_fields(reply, KVP, {0: u32(0), 8: u32(19), 16: z8("VirtualMachineName"), 532: z8("vm1")})
    assert kvp.decode_kvp_reply(kvp.KvpOp.GET, reply).value == "vm1"


def test_kvp_ip_info_reply_golden() -> None:
    request = kvp.KvpGetIpInfo(0, "00:15:5D:00:00:01", 0).encode()
    info = kvp.KvpIpInfo(
        "00:15:5D:00:00:01", 3, True, "192.0.2.10", "255.255.255.0", "192.0.2.1;", "1.1.1.1;"
    )
    reply = kvp.kvp_ip_info_reply(request, info)
    assert_fields(
        reply,
        KVP,
        {
            0: u32(0),
            4: z8("00:15:5D:00:00:01"),
            260: u8(3),
            261: u8(1),
            262: z8("192.0.2.10"),
            2310: z8("255.255.255.0"),
            4358: z8("192.0.2.1;"),
            5382: z8("1.1.1.1;"),
        },
    )
    assert kvp.decode_kvp_reply(kvp.KvpOp.GET_IP_INFO, reply) == kvp.KvpReply(0, ip_info=info)


def test_kvp_reply_with_error_status_carries_no_strings() -> None:
    reply = kvp.kvp_reply(kvp.KvpEnumerate(1, 9).encode(), HvStatus.HV_S_CONT)
    assert kvp.decode_kvp_reply(kvp.KvpOp.ENUMERATE, reply) == kvp.KvpReply(HvStatus.HV_S_CONT)


HOST_KVP: list[tuple[Any, dict[int, bytes]]] = [
    (
        kvp.HostKvpMessage(kvp.KvpOp.SET, 0, "k", "v", kvp.RegType.REG_SZ),
        {0: u8(1), 4: u32(1), 8: u32(4), 12: u32(4), 16: z16("k"), 528: z16("v")},
    ),
    (
        kvp.HostKvpMessage(kvp.KvpOp.SET, 3, "n", 0xDEADBEEF, kvp.RegType.REG_U32),
        {0: u8(1), 1: u8(3), 4: u32(4), 8: u32(4), 12: u32(4), 16: z16("n"), 528: u32(0xDEADBEEF)},
    ),
    (
        kvp.HostKvpMessage(kvp.KvpOp.SET, 0, "n", 2**40, kvp.RegType.REG_U64),
        {0: u8(1), 4: u32(8), 8: u32(4), 12: u32(8), 16: z16("n"), 528: u64(2**40)},
    ),
    (kvp.HostKvpMessage(kvp.KvpOp.GET, 1, "key"), {0: u8(0), 1: u8(1), 8: u32(8), 16: z16("key")}),
    (kvp.HostKvpMessage(kvp.KvpOp.DELETE, 0, "k"), {0: u8(2), 4: u32(4), 8: z16("k")}),
    (kvp.HostKvpMessage(kvp.KvpOp.ENUMERATE, 2, index=3), {0: u8(3), 1: u8(2), 4: u32(3)}),
    (
        kvp.HostKvpMessage(kvp.KvpOp.ENUMERATE, 2, "K", "V", kvp.RegType.REG_SZ, index=3),
        {
            0: u8(3),
            1: u8(2),
            4: u32(3),
            8: u32(1),
            12: u32(4),
            16: u32(4),
            20: z16("K"),
            532: z16("V"),
        },
    ),
]


@pytest.mark.parametrize(("msg", "fields"), HOST_KVP)
def test_host_kvp_golden(msg: kvp.HostKvpMessage, fields: dict[int, bytes]) -> None:
    expected = layout(KVP, fields)
    assert msg.encode() == expected
    assert kvp.HostKvpMessage.decode(expected) == msg
    assert_fields(msg.encode(), KVP, fields)


def test_host_kvp_ip_golden() -> None:
    msg = kvp.HostKvpIpMessage(
        5, 0, "{guid}", 1, True, "10.0.0.2", "255.0.0.0", "10.0.0.1", "10.0.0.53"
    )
    fields = {
        0: u8(5),
        2: "{guid}".encode("utf-16-le"),
        258: u8(1),
        259: u8(1),
        260: "10.0.0.2".encode("utf-16-le"),
        2308: "255.0.0.0".encode("utf-16-le"),
        4356: "10.0.0.1".encode("utf-16-le"),
        5380: "10.0.0.53".encode("utf-16-le"),
    }
    expected = layout(kvp.KVP_IP_MSG_SIZE, fields)
    assert msg.encode() == expected
    assert kvp.HostKvpIpMessage.decode(expected) == msg


# ---------------------------------------------------------------------------
# VSS

VSS_CASES = [
    (vss.VssMessage(vss.VssOp.FREEZE), {0: u8(5)}),
    (vss.VssMessage(vss.VssOp.THAW), {0: u8(6)}),
    (vss.VssMessage(vss.VssOp.HOT_BACKUP, vss.VSS_HBU_NO_AUTO_RECOVERY), {0: u8(2), 8: u32(5)}),
]


@pytest.mark.parametrize(("msg", "fields"), VSS_CASES)
def test_vss_golden(msg: vss.VssMessage, fields: dict[int, bytes]) -> None:
    expected = layout(12, fields)
    assert msg.encode() == expected
    assert vss.VssMessage.decode(expected) == msg
    assert_fields(msg.encode(), 12, fields)


def test_vss_reply() -> None:
    request = bytes([5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    assert vss.vss_reply(request, 0) == u32(0) + request[4:]
    assert vss.vss_reply(request, HvStatus.HV_E_FAIL) == u32(0x80004005) + request[4:]
    assert vss.vss_reply(request, 0, flags=5) == u32(0) + request[4:8] + u32(5)
    assert vss.vss_reply(b"\x05", 0) == bytes(12)
    assert vss.vss_reply(request + b"extra", 0) == u32(0) + request[4:]


def test_vss_registration() -> None:
    assert vss.VSS_REGISTER_MSG == layout(12, {0: u8(129)})
    assert vss.decode_vss_register_reply(u32(129)) == 129


# ---------------------------------------------------------------------------
# FCOPY

FCOPY_CASES: list[tuple[Any, bool, int, dict[int, bytes]]] = [
    (
        fcopy.FcopyStart("a.txt", "/tmp/x", fcopy.OVER_WRITE | fcopy.CREATE_PATH, 12345),
        False,
        1088,
        {0: u32(0), 36: z8("a.txt"), 556: z8("/tmp/x"), 1076: u32(3), 1080: u64(12345)},
    ),
    (
        fcopy.FcopyStart("ä😀.bin", "/srv", 0, 2**40),
        False,
        1088,
        {0: u32(0), 36: z8("ä😀.bin"), 556: z8("/srv"), 1080: u64(2**40)},
    ),
    (
        fcopy.FcopyStart("ä😀.bin", "/srv", fcopy.OVER_WRITE, 7),
        True,
        1088,
        {0: u32(0), 36: z16("ä😀.bin"), 556: z16("/srv"), 1076: u32(1), 1080: u64(7)},
    ),
    (
        fcopy.FcopyWrite(4096, b"hello"),
        False,
        6196,
        {0: u32(1), 40: u64(4096), 48: u32(5), 52: b"hello"},
    ),
    (fcopy.FcopyComplete(), False, 36, {0: u32(2)}),
    (fcopy.FcopyCancel(), True, 36, {0: u32(3)}),
]


@pytest.mark.parametrize(("msg", "utf16", "size", "fields"), FCOPY_CASES)
def test_fcopy_golden(msg: Any, utf16: bool, size: int, fields: dict[int, bytes]) -> None:
    expected = layout(size, fields)
    assert msg.encode(utf16=utf16) == expected
    assert fcopy.decode_fcopy_request(expected, utf16=utf16) == msg
    assert_fields(msg.encode(utf16=utf16), size, fields)


def test_fcopy_short_complete_and_cancel_from_legacy_device() -> None:
    assert fcopy.decode_fcopy_request(u32(2), utf16=False) == fcopy.FcopyComplete()
    assert fcopy.decode_fcopy_request(u32(3) + bytes(60), utf16=False) == fcopy.FcopyCancel()


def test_fcopy_write_with_payload_shorter_than_fragment() -> None:
    buf = layout(52 + 3, {0: u32(1), 40: u64(9), 48: u32(3), 52: b"abc"})
    assert fcopy.decode_fcopy_request(buf, utf16=True) == fcopy.FcopyWrite(9, b"abc")


def test_fcopy_registration_and_reply() -> None:
    assert fcopy.FCOPY_REGISTER_MSG == u32(1)
    assert fcopy.fcopy_reply(HvStatus.HV_ERROR_ALREADY_EXISTS) == u32(0x80070050)
    assert fcopy.fcopy_reply(-1) == b"\xff\xff\xff\xff"
    assert fcopy.decode_fcopy_register_reply(u32(1)) == 1


# ---------------------------------------------------------------------------
# Pool records


def test_pool_record_golden() -> None:
    record = pool.PoolRecord.from_text("HostName", "host-01")
    fields = {0: z8("HostName"), 512: z8("host-01")}
    expected = layout(2560, fields)
    assert record.encode() == expected
    assert pool.PoolRecord.decode(expected) == record
    assert record.key_text() == "HostName" and record.value_text() == "host-01"


def test_pool_record_ignores_stale_bytes_after_nul() -> None:
    buf = layout(2560, {0: b"k\0stale", 512: b"v\0garbage\xff"})
    assert pool.PoolRecord.decode(buf) == pool.PoolRecord(b"k", b"v")


def test_decode_pool_reports_partial_tail() -> None:
    a = pool.PoolRecord.from_text("a", "1")
    b = pool.PoolRecord(b"b\xff", b"2")  # invalid UTF-8 stays readable as bytes
    data = a.encode() + b.encode() + b"partial"
    assert pool.decode_pool(data) == ([a, b], 7)
    assert pool.decode_pool(b"") == ([], 0)
    assert pool.encode_pool([a, b]) == data[:-7]


# ---------------------------------------------------------------------------
# IC header and VMBus


def test_ic_header_golden() -> None:
    header = icmsg.IcHeader(
        pipe_flags=1,
        pipe_msgsize=0x40,
        framever=icmsg.IcVersion(3, 0),
        msgtype=icmsg.IcMsgType.KVPEXCHANGE,
        msgver=icmsg.IcVersion(4, 0),
        msgsize=7432,
        status=HvStatus.HV_S_CONT,
        trans_id=0x12,
        flags=icmsg.ICMSG_REQUEST_FLAGS,
    )
    fields = {
        0: u32(1),
        4: u32(0x40),
        8: u16(3),
        10: u16(0),
        12: u16(2),
        14: u16(4),
        16: u16(0),
        18: u16(7432),
        20: u32(0x80070103),
        24: u8(0x12),
        25: u8(3),
    }
    expected = layout(28, fields)
    assert header.encode() == expected
    assert icmsg.IcHeader.decode(expected) == header
    assert icmsg.IcHeader.decode(expected + b"body") == header


def test_ic_version_packed() -> None:
    assert icmsg.IcVersion(3, 0).packed == 0x30000
    assert icmsg.IcVersion.from_packed(0x10001) == icmsg.IcVersion(1, 1)
    assert icmsg.KVP_SRV_VERSIONS == tuple(
        icmsg.IcVersion.from_packed(v) for v in (262144, 196608, 65536)
    )


def test_ic_response() -> None:
    payload = layout(40, {12: u16(1), 25: u8(3), 28: b"body"})
    response = icmsg.ic_response(payload, HvStatus.HV_E_FAIL)
    assert response == layout(40, {12: u16(1), 20: u32(0x80004005), 25: u8(5), 28: b"body"})


def test_packet_descriptor_golden() -> None:
    desc = vmbus.VmPacketDescriptor(6, 2, 5, 1, 0x1122334455667788)
    fields = {0: u16(6), 2: u16(2), 4: u16(5), 6: u16(1), 8: u64(0x1122334455667788)}
    assert desc.encode() == layout(16, fields)
    assert vmbus.VmPacketDescriptor.decode(layout(16, fields)) == desc


def test_build_and_split_inband_packet() -> None:
    payload = b"x" * 30
    packet = vmbus.build_inband_packet(payload, 77)
    assert len(packet) == 48  # 16 + 30 -> 46, padded to 48
    assert packet[:16] == layout(16, {0: u16(6), 2: u16(2), 4: u16(6), 8: u64(77)})
    desc, body = vmbus.split_packet(packet + vmbus.packet_trailer(0x100))
    assert desc.trans_id == 77 and body == payload + b"\0\0"
    assert vmbus.packet_trailer(0x100) == u64(0x100 << 32)


def test_ring_header_golden() -> None:
    ring = vmbus.RingHeader(100, 50, 1, 4096, 1)
    fields = {0: u32(100), 4: u32(50), 8: u32(1), 12: u32(4096), 64: u32(1)}
    assert ring.encode() == layout(4096, fields)
    assert vmbus.RingHeader.decode(layout(4096, fields)) == ring


BODY_CASES: list[tuple[Any, int, dict[int, bytes]]] = [
    (vmbus.HeartbeatMsg(41), 40, {0: u64(41)}),
    (
        vmbus.ShutdownMsg(5, 30, vmbus.SHUTDOWN_FLAG_REBOOT | 1, b"going down"),
        2060,
        {0: u32(5), 4: u32(30), 8: u32(3), 12: b"going down"},
    ),
    (
        vmbus.TimesyncRefMsg(133000000000000000, 5000, vmbus.ICTIMESYNCFLAG_SYNC, 2, 3),
        22,
        {0: u64(133000000000000000), 8: u64(5000), 16: u8(1), 17: u8(2), 18: u8(3)},
    ),
    (
        vmbus.TimesyncMsg(1, 2, 3, vmbus.ICTIMESYNCFLAG_SAMPLE),
        25,
        {0: u64(1), 8: u64(2), 16: u64(3), 24: u8(2)},
    ),
]


@pytest.mark.parametrize(("msg", "size", "fields"), BODY_CASES)
def test_ic_body_golden(msg: Any, size: int, fields: dict[int, bytes]) -> None:
    expected = layout(size, fields)
    assert msg.encode() == expected
    assert type(msg).decode(expected) == msg


def test_filetime_conversion() -> None:
    assert vmbus.filetime_to_unix_ns(116444736000000000) == 0
    assert vmbus.unix_ns_to_filetime(0) == 116444736000000000
    assert vmbus.filetime_to_unix_ns(116444736000000001) == 100
    assert vmbus.unix_ns_to_filetime(1_700_000_000_000_000_000) == 133444736000000000


@pytest.mark.parametrize(
    "request_obj",
    [
        kvp.KvpGet(kvp.KvpPool.GUEST, "key"),
        kvp.KvpSet(kvp.KvpPool.EXTERNAL, "k", "v"),
        kvp.KvpDelete(kvp.KvpPool.EXTERNAL, "gone"),
        kvp.KvpEnumerate(kvp.KvpPool.AUTO, 7),
    ],
)
def test_decoded_kvp_request_is_the_dataclass_itself(request_obj: Any) -> None:
    """The decoder fills the instances without __init__: they must still be the same
    frozen values (equal, same hash and repr, pool the enum member, immutable)."""
    decoded: Any = kvp.decode_kvp_request(request_obj.encode())
    assert decoded == request_obj
    assert hash(decoded) == hash(request_obj)
    assert repr(decoded) == repr(request_obj)
    assert type(decoded.pool) is kvp.KvpPool
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.pool = kvp.KvpPool.GUEST
