"""Decoders and encoders refuse bad input with a WireError naming the field and limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from wire_golden import layout, u8, u16, u32, z8, z16

from hvguest.errors import HostProtocolError, WireError
from hvguest.wire import fcopy, icmsg, kvp, pool, vmbus, vss

KVP = kvp.KVP_MSG_SIZE


def expect(field: str, call: Callable[[], Any], limit: object = None) -> WireError:
    with pytest.raises(WireError) as info:
        call()
    assert info.value.field == field, str(info.value)
    if limit is not None:
        assert info.value.limit == limit
    assert isinstance(info.value, HostProtocolError)
    return info.value


def kvp_msg(fields: dict[int, bytes]) -> bytes:
    return layout(KVP, fields)


KVP_BAD: list[tuple[str, bytes, object]] = [
    ("length", bytes(KVP - 1), KVP),
    ("length", bytes(KVP + 1), KVP),
    ("operation", kvp_msg({0: u8(6)}), 5),
    ("operation", kvp_msg({0: u8(99)}), 5),
    ("pool", kvp_msg({0: u8(0), 1: u8(5), 8: u32(2), 16: z8("k")}), 4),
    ("key_size", kvp_msg({0: u8(0), 8: u32(0)}), 512),
    ("key_size", kvp_msg({0: u8(0), 8: u32(513), 16: z8("k")}), 512),
    ("key_size", kvp_msg({0: u8(2), 4: u32(600), 8: z8("k")}), 512),
    ("value_size", kvp_msg({0: u8(1), 8: u32(2), 12: u32(2049), 16: z8("k")}), 2048),
    ("value_size", kvp_msg({0: u8(0), 8: u32(2), 12: u32(5000), 16: z8("k")}), 2048),
    ("key", kvp_msg({0: u8(0), 8: u32(3), 16: b"abc"}), None),  # NUL beyond key_size
    ("key", kvp_msg({0: u8(0), 8: u32(512), 16: b"a" * 512}), None),
    ("key", kvp_msg({0: u8(0), 8: u32(3), 16: b"\xff\xfe\0"}), "UTF-8"),
    ("value", kvp_msg({0: u8(1), 8: u32(2), 12: u32(3), 16: z8("k"), 528: b"\xc3\0"}), "UTF-8"),
    ("value", kvp_msg({0: u8(1), 8: u32(2), 12: u32(2), 16: z8("k"), 528: b"ab"}), None),
    ("index", kvp_msg({0: u8(3), 4: u32(2**31)}), 2**31 - 1),
    ("adapter_id", kvp_msg({0: u8(4), 4: b"a" * 256}), None),
    ("adapter_id", kvp_msg({0: u8(4), 4: b"\x80\0"}), "UTF-8"),
    ("ip_addr", kvp_msg({0: u8(5), 262: b"1" * 2048}), None),
    ("sub_net", kvp_msg({0: u8(5), 2310: b"\xed\xa0\x80\0"}), "UTF-8"),  # encoded surrogate
    ("gate_way", kvp_msg({0: u8(5), 4358: b"g" * 1024}), None),
    ("dns_addr", kvp_msg({0: u8(5), 5382: b"d" * 2048}), None),
    ("version", kvp_msg({0: u8(100), 4: b"v" * 512}), None),
]


@pytest.mark.parametrize(("field", "buf", "limit"), KVP_BAD)
def test_decode_kvp_request_rejects(field: str, buf: bytes, limit: object) -> None:
    expect(field, lambda: kvp.decode_kvp_request(buf), limit)


def test_kvp_error_message_names_value_and_limit() -> None:
    error = expect("key_size", lambda: kvp.decode_kvp_request(kvp_msg({8: u32(600)})))
    assert "600" in str(error) and "512" in str(error)


def test_kvp_encoders_refuse_oversized_values() -> None:
    expect("key", lambda: kvp.KvpGet(0, "k" * 512).encode(), 511)
    expect("key", lambda: kvp.KvpGet(0, "é" * 256).encode(), 511)  # 512 UTF-8 bytes
    expect("value", lambda: kvp.KvpSet(0, "k", "v" * 2048).encode(), 2047)
    expect("key", lambda: kvp.KvpDelete(0, "a\0b").encode())
    expect("key", lambda: kvp.KvpGet(0, "\udc80").encode())
    expect("pool", lambda: kvp.KvpGet(256, "k").encode())
    expect("index", lambda: kvp.KvpEnumerate(0, -1).encode())
    expect("adapter_id", lambda: kvp.KvpGetIpInfo(0, "a" * 256).encode(), 255)
    expect("gate_way", lambda: kvp.KvpIpInfo("a", gate_way="g" * 1024).write_into(bytearray(KVP)))
    assert kvp.KvpGet(0, "k" * 511).encode()[16 + 511] == 0


def test_kvp_reply_builders_refuse_oversized_values() -> None:
    request = kvp.KvpEnumerate(1, 0).encode()
    expect("key", lambda: kvp.kvp_enumerate_reply(request, "k" * 512, ""), 511)
    expect("value", lambda: kvp.kvp_enumerate_reply(request, "k", "v" * 2048), 2047)
    expect("value", lambda: kvp.kvp_get_reply(request, "v" * 2048), 2047)
    expect("status", lambda: kvp.kvp_reply(request, 2**32))
    # the limits themselves are fine
    reply = kvp.kvp_enumerate_reply(request, "k" * 511, "v" * 2047)
    assert reply[531] == 0 and reply[2579] == 0


def test_decode_kvp_reply_rejects() -> None:
    expect("length", lambda: kvp.decode_kvp_reply(kvp.KvpOp.GET, bytes(100)))
    bad = kvp_msg({532: b"\xff\0"})
    expect("value", lambda: kvp.decode_kvp_reply(kvp.KvpOp.GET, bad))
    # lenient: a key filling its field without NUL is taken whole
    reply = kvp_msg({20: b"k" * 512, 532: z8("v")})
    assert kvp.decode_kvp_reply(kvp.KvpOp.ENUMERATE, reply).key == "k" * 512


def test_host_kvp_rejects() -> None:
    expect("operation", lambda: kvp.HostKvpMessage(4, 0).encode())
    expect("operation", lambda: kvp.HostKvpMessage.decode(kvp_msg({0: u8(9)})))
    expect("length", lambda: kvp.HostKvpMessage.decode(b"\x03\x00"))
    expect("value", lambda: kvp.HostKvpMessage(1, 0, "k", "x", kvp.RegType.REG_U32).encode())
    expect("value", lambda: kvp.HostKvpMessage(1, 0, "k", 5, kvp.RegType.REG_SZ).encode())
    expect("value", lambda: kvp.HostKvpMessage(1, 0, "k", 2**32, kvp.RegType.REG_U32).encode())
    expect("key", lambda: kvp.HostKvpMessage(0, 0, "k" * 256).encode(), 255)
    lone = kvp_msg({0: u8(0), 8: u32(4), 16: u16(0xD800) + u16(0)})
    expect("key", lambda: kvp.HostKvpMessage.decode(lone), "UTF-16")
    expect("length", lambda: kvp.HostKvpIpMessage.decode(bytes(100)))
    expect("operation", lambda: kvp.HostKvpIpMessage.decode(bytes(kvp.KVP_IP_MSG_SIZE)))
    expect("ip_addr", lambda: kvp.HostKvpIpMessage(4, 0, ip_addr="1" * 1025).encode(), 1024)


VSS_BAD = [
    ("length", b"\x05" * 11),
    ("length", bytes(13)),
    ("operation", layout(12, {0: u8(8)})),
    ("operation", layout(12, {0: u8(129)})),
]


@pytest.mark.parametrize(("field", "buf"), VSS_BAD)
def test_vss_decode_rejects(field: str, buf: bytes) -> None:
    expect(field, lambda: vss.VssMessage.decode(buf))


def test_vss_register_reply_rejects() -> None:
    expect("length", lambda: vss.decode_vss_register_reply(bytes(12)))
    expect("version", lambda: vss.decode_vss_register_reply(u32(128)))
    expect("flags", lambda: vss.VssMessage(5, 2**32).encode())
    expect("flags", lambda: vss.vss_reply(bytes(12), 0, flags=-1))


def start(fields: dict[int, bytes], size: int = 1088) -> bytes:
    return layout(size, {0: u32(0), **fields})


FCOPY_BAD: list[tuple[str, bytes, bool]] = [
    ("length", b"", False),
    ("length", b"\x02\x00\x00", True),
    ("operation", u32(4) + bytes(32), False),
    ("operation", u32(2**31) + bytes(32), True),
    ("length", start({36: z8("a"), 556: z8("/")}, 1087), False),
    ("file_name", start({36: b"a" * 520, 556: z8("/")}), False),
    ("path_name", start({36: z8("a"), 556: b"/" * 520}), False),
    ("file_name", start({36: b"\xff\0", 556: z8("/")}), False),
    ("file_name", start({36: u16(0xDC00) + u16(0), 556: z16("/")}), True),
    ("path_name", start({36: z16("a"), 556: u16(0xD83D) + u16(0x41) + u16(0)}), True),
    ("path_name", start({36: z16("a"), 556: b"/\0" * 260}), True),
    ("size", u32(1) + bytes(47), False),
    ("size", layout(6196, {0: u32(1), 48: u32(6145)}), False),
    ("size", layout(52 + 10, {0: u32(1), 48: u32(11)}), True),
]


@pytest.mark.parametrize(("field", "buf", "utf16"), FCOPY_BAD)
def test_fcopy_decode_rejects(field: str, buf: bytes, utf16: bool) -> None:
    expect(field, lambda: fcopy.decode_fcopy_request(buf, utf16=utf16))


def test_fcopy_encoders_refuse() -> None:
    expect("file_name", lambda: fcopy.FcopyStart("a" * 260, "/").encode(), 259)
    expect("file_name", lambda: fcopy.FcopyStart("a" * 260, "/").encode(utf16=True), 259)
    # 130 astral characters are 260 code units: one too many with the NUL
    expect("path_name", lambda: fcopy.FcopyStart("a", "😀" * 130).encode(utf16=True), 259)
    expect("size", lambda: fcopy.FcopyWrite(0, bytes(6145)).encode(), 6144)
    expect("offset", lambda: fcopy.FcopyWrite(-1, b"").encode())
    expect("copy_flags", lambda: fcopy.FcopyStart("a", "/", 2**32).encode())
    expect("length", lambda: fcopy.decode_fcopy_register_reply(bytes(3)))
    expect("version", lambda: fcopy.decode_fcopy_register_reply(u32(0)))
    assert len(fcopy.FcopyStart("a" * 259, "/" * 259).encode(utf16=True)) == 1088


def test_pool_limits() -> None:
    expect("key", lambda: pool.PoolRecord.from_text("k" * 512, ""), 511)
    expect("value", lambda: pool.PoolRecord.from_text("k", "v" * 2048), 2047)
    expect("key", lambda: pool.PoolRecord.from_text("a\0", ""))
    expect("key", lambda: pool.PoolRecord(b"k" * 512, b"").encode(), 511)
    expect("value", lambda: pool.PoolRecord(b"k", b"a\0b").encode())
    expect("length", lambda: pool.PoolRecord.decode(bytes(2559)), 2560)
    expect("key", lambda: pool.PoolRecord(b"\xff", b"").key_text(), "UTF-8")
    expect("value", lambda: pool.PoolRecord(b"k", b"\xc3").value_text(), "UTF-8")
    assert pool.PoolRecord.decode(b"k" * 2560) == pool.PoolRecord(b"k" * 512, b"k" * 2048)


def test_icmsg_rejects() -> None:
    expect("length", lambda: icmsg.IcHeader.decode(bytes(27)), 28)
    expect("length", lambda: icmsg.ic_response(bytes(27), 0), 28)
    expect("length", lambda: icmsg.negotiate_response(bytes(20), [], []), 28)
    expect("version", lambda: icmsg.IcVersion.from_packed(2**32))
    expect("major", lambda: icmsg.IcVersion(65536, 0).encode())


def test_vmbus_rejects() -> None:
    expect("length", lambda: vmbus.VmPacketDescriptor.decode(bytes(15)), 16)
    desc = layout(16, {0: u16(6), 2: u16(1), 4: u16(4)})
    expect("offset8", lambda: vmbus.VmPacketDescriptor.decode(desc), 2)
    desc = layout(16, {0: u16(6), 2: u16(5), 4: u16(4)})
    expect("offset8", lambda: vmbus.VmPacketDescriptor.decode(desc), 4)
    short = layout(24, {0: u16(6), 2: u16(2), 4: u16(4)})
    expect("length", lambda: vmbus.split_packet(short), 32)
    expect("len8", lambda: vmbus.build_inband_packet(bytes(0xFFFF * 8), 0))
    expect("trans_id", lambda: vmbus.build_inband_packet(b"", 2**64))
    expect("length", lambda: vmbus.HeartbeatMsg.decode(bytes(7)), 8)
    expect("length", lambda: vmbus.ShutdownMsg.decode(bytes(2059)), 2060)
    expect("length", lambda: vmbus.TimesyncRefMsg.decode(bytes(21)), 22)
    expect("length", lambda: vmbus.TimesyncMsg.decode(bytes(24)), 25)
    expect("display_message", lambda: vmbus.ShutdownMsg(0, 0, 0, bytes(2049)).encode(), 2048)
    expect("length", lambda: vmbus.RingHeader.decode(bytes(67)), 68)
