"""The kernel's KVP conversions as modelled for the simulator (hv_kvp.c, nls_base.c)."""

from __future__ import annotations

import pytest
from wire_golden import u16, u32

from hvguest.errors import WireError
from hvguest.wire import kvp
from hvguest.wire.kvp import HostKvpIpMessage, HostKvpMessage, KvpOp, RegType
from hvguest.wire.kvp_kernel import (
    kernel_utf8_to_utf16,
    kernel_utf16_to_utf8,
    kvp_daemon_to_host,
    kvp_host_to_daemon,
)
from hvguest.wire.status import HvStatus


def test_utf16_to_utf8_stops_at_nul_and_inlen() -> None:
    data = "abc".encode("utf-16-le") + b"\0\0" + "zz".encode("utf-16-le")
    assert kernel_utf16_to_utf8(data, 100, 100) == b"abc"
    assert kernel_utf16_to_utf8(data, 2, 100) == b"ab"
    assert kernel_utf16_to_utf8(data, 0, 100) == b""


def test_utf16_to_utf8_skips_unpaired_surrogates() -> None:
    data = u16(0xDC00) + u16(0x41) + u16(0xD800) + u16(0x42) + u16(0)
    assert kernel_utf16_to_utf8(data, 10, 100) == b"AB"
    pair = "😀".encode("utf-16-le")
    assert kernel_utf16_to_utf8(pair, 2, 100) == "😀".encode()
    assert kernel_utf16_to_utf8(pair, 1, 100) == b""  # high half with inlen exhausted


def test_utf16_to_utf8_stops_at_first_character_that_does_not_fit() -> None:
    data = ("a" * 510 + "é" + "b").encode("utf-16-le")
    assert kernel_utf16_to_utf8(data, 1000, 511) == b"a" * 510


def test_utf8_to_utf16_limits_and_errors() -> None:
    assert kernel_utf8_to_utf16("héllo".encode() + b"\0junk", 100) == "héllo".encode("utf-16-le")
    assert kernel_utf8_to_utf16(b"abcdef", 4) == "abcd".encode("utf-16-le")
    # an astral character needs two units: it is dropped when only one is left
    assert kernel_utf8_to_utf16("ab😀".encode(), 3) == "ab".encode("utf-16-le")
    with pytest.raises(WireError):
        kernel_utf8_to_utf16(b"ab\xffcd", 100)
    # invalid bytes beyond the output limit are never reached
    assert kernel_utf8_to_utf16(b"ab\xff", 2) == "ab".encode("utf-16-le")


def roundtrip(host: HostKvpMessage, reply_for: object) -> tuple[int, HostKvpMessage]:
    daemon_msg = kvp_host_to_daemon(host.encode())
    assert len(daemon_msg) == kvp.KVP_MSG_SIZE
    assert callable(reply_for)
    reply = reply_for(daemon_msg)
    status, body = kvp_daemon_to_host(host.operation, host.encode(), reply)
    return status, HostKvpMessage.decode(body)


@pytest.mark.parametrize(
    ("value", "vtype", "text"),
    [
        ("größe 😀", RegType.REG_SZ, "größe 😀"),
        (4294967295, RegType.REG_U32, "4294967295"),
        (2**64 - 1, RegType.REG_U64, "18446744073709551615"),
        ("ignored", 7, ""),
    ],
)
def test_set_conversions(value: str | int, vtype: int, text: str) -> None:
    host = HostKvpMessage(KvpOp.SET, 0, "Schlüssel", value, vtype)
    daemon_msg = kvp_host_to_daemon(host.encode())
    assert kvp.decode_kvp_request(daemon_msg) == kvp.KvpSet(0, "Schlüssel", text)
    value_size = int.from_bytes(daemon_msg[12:16], "little")
    assert value_size == (len(text.encode()) + 1 if vtype in (1, 4, 8) else 0)
    assert daemon_msg[4:8] == bytes(4)  # value_type is not forwarded


def test_set_value_longer_than_the_daemon_field_is_cut() -> None:
    host = HostKvpMessage(KvpOp.SET, 0, "k", "é" * 1023, RegType.REG_SZ)
    request = kvp.decode_kvp_request(kvp_host_to_daemon(host.encode()))
    assert isinstance(request, kvp.KvpSet)
    assert request.value == "é" * 1023  # 2046 bytes: fits in 2047
    host = HostKvpMessage(KvpOp.SET, 0, "k", "€" * 1023, RegType.REG_SZ)
    request = kvp.decode_kvp_request(kvp_host_to_daemon(host.encode()))
    assert isinstance(request, kvp.KvpSet)
    assert request.value == "€" * 682  # 2046 bytes; the next one would need 2049


def test_get_reads_value_from_532() -> None:
    host = HostKvpMessage(KvpOp.GET, 0, "VirtualMachineName")
    status, answer = roundtrip(host, lambda msg: kvp.kvp_get_reply(msg, "vm-01"))
    assert status == 0
    assert answer == HostKvpMessage(KvpOp.GET, 0, "VirtualMachineName", "vm-01", RegType.REG_SZ)


def test_c_daemon_style_get_reply_gives_the_host_an_empty_string() -> None:
    host = HostKvpMessage(KvpOp.GET, 0, "k")

    def c_daemon(msg: bytes) -> bytes:
        buf = bytearray(kvp.kvp_reply(msg, 0))
        buf[528:531] = b"vm\0"  # what hv_kvp_daemon does: the GET view's value slot
        return bytes(buf)

    # @528 "vm\0" puts "\0" at 530..; the kernel reads from 532 and finds an empty string
    status, answer = roundtrip(host, c_daemon)
    assert status == 0 and answer.value == ""


def test_enumerate_truncates_to_254_and_1022_units() -> None:
    host = HostKvpMessage(KvpOp.ENUMERATE, 1, index=0)
    status, answer = roundtrip(
        host, lambda msg: kvp.kvp_enumerate_reply(msg, "k" * 300, "v" * 2000)
    )
    assert status == 0
    assert answer.key == "k" * 254 and answer.value == "v" * 1022
    assert answer.value_type == RegType.REG_SZ
    body = kvp_daemon_to_host(
        3, host.encode(), kvp.kvp_enumerate_reply(kvp.KVP_REGISTER_MSG, "ab", "c")
    )[1]
    assert body[12:16] == u32(6) and body[16:20] == u32(4)  # sizes in bytes incl. NUL


def test_enumerate_invalid_utf8_fails_the_host() -> None:
    host = HostKvpMessage(KvpOp.ENUMERATE, 1, index=0)
    reply = bytearray(kvp.kvp_enumerate_reply(kvp_host_to_daemon(host.encode()), "k", "v"))
    reply[532:535] = b"\xff\xfe\0"
    status, _ = kvp_daemon_to_host(KvpOp.ENUMERATE, host.encode(), bytes(reply))
    assert status == HvStatus.HV_E_FAIL


def test_error_status_passes_through_unchanged() -> None:
    host = HostKvpMessage(KvpOp.ENUMERATE, 1, index=99)
    daemon_msg = kvp_host_to_daemon(host.encode())
    status, body = kvp_daemon_to_host(
        KvpOp.ENUMERATE, host.encode(), kvp.kvp_reply(daemon_msg, HvStatus.HV_S_CONT)
    )
    assert status == HvStatus.HV_S_CONT and body == host.encode()


def test_delete_and_set_answer_status_only() -> None:
    host = HostKvpMessage(KvpOp.DELETE, 0, "k")
    daemon_msg = kvp_host_to_daemon(host.encode())
    assert kvp.decode_kvp_request(daemon_msg) == kvp.KvpDelete(0, "k")
    status, body = kvp_daemon_to_host(KvpOp.DELETE, host.encode(), kvp.kvp_reply(daemon_msg, 0))
    assert status == 0 and body == host.encode()


def test_ip_info_get_round_trip_with_the_two_byte_shift() -> None:
    host = HostKvpIpMessage(KvpOp.GET_IP_INFO, 0, "00:15:5D:00:00:01", 3)
    daemon_msg = kvp_host_to_daemon(host.encode())
    assert kvp.decode_kvp_request(daemon_msg) == kvp.KvpGetIpInfo(0, "00:15:5D:00:00:01", 3)
    info = kvp.KvpIpInfo(
        "00:15:5D:00:00:01",
        3,
        True,
        "192.0.2.10;2001:db8::10",
        "255.255.255.0;64",
        "192.0.2.1;",
        "192.0.2.53;",
    )
    status, body = kvp_daemon_to_host(
        KvpOp.GET_IP_INFO, host.encode(), kvp.kvp_ip_info_reply(daemon_msg, info)
    )
    assert status == 0
    answer = HostKvpIpMessage.decode(body)
    assert answer == HostKvpIpMessage(
        KvpOp.GET_IP_INFO,
        0,
        info.adapter_id,
        3,
        True,
        info.ip_addr,
        info.sub_net,
        info.gate_way,
        info.dns_addr,
    )


def test_ip_info_set_is_converted_for_the_daemon() -> None:
    host = HostKvpIpMessage(
        KvpOp.SET_IP_INFO, 0, "{guid}", 1, False, "10.0.0.2", "255.0.0.0", "10.0.0.1", "10.0.0.53"
    )
    request = kvp.decode_kvp_request(kvp_host_to_daemon(host.encode()))
    assert request == kvp.KvpSetIpInfo(
        0, "{guid}", 1, False, "10.0.0.2", "255.0.0.0", "10.0.0.1", "10.0.0.53"
    )


def test_host_body_length_is_kept() -> None:
    short = HostKvpMessage(KvpOp.GET, 0, "k").encode()[:600]
    daemon_msg = kvp_host_to_daemon(short)
    _, body = kvp_daemon_to_host(KvpOp.GET, short, kvp.kvp_get_reply(daemon_msg, "v"))
    assert len(body) == 600 and body[528:532] == "v".encode("utf-16-le") + b"\0\0"


CONSISTENT: list[tuple[HostKvpMessage | HostKvpIpMessage, kvp.KvpRequest]] = [
    (HostKvpMessage(KvpOp.GET, 1, "key"), kvp.KvpGet(1, "key")),
    (HostKvpMessage(KvpOp.SET, 0, "k", "välue", RegType.REG_SZ), kvp.KvpSet(0, "k", "välue")),
    (HostKvpMessage(KvpOp.SET, 0, "k", 42, RegType.REG_U32), kvp.KvpSet(0, "k", "42")),
    (HostKvpMessage(KvpOp.DELETE, 4, "😀"), kvp.KvpDelete(4, "😀")),
    (HostKvpMessage(KvpOp.ENUMERATE, 2, index=9), kvp.KvpEnumerate(2, 9)),
    (HostKvpIpMessage(KvpOp.GET_IP_INFO, 0, "MAC", 2), kvp.KvpGetIpInfo(0, "MAC", 2)),
    (
        HostKvpIpMessage(KvpOp.SET_IP_INFO, 0, "{g}", 1, True, "a", "b", "c", "d"),
        kvp.KvpSetIpInfo(0, "{g}", 1, True, "a", "b", "c", "d"),
    ),
]


@pytest.mark.parametrize(("host", "daemon"), CONSISTENT)
def test_kernel_output_is_what_the_request_encoders_produce(
    host: HostKvpMessage | HostKvpIpMessage, daemon: kvp.KvpRequest
) -> None:
    # two independent paths to the same 7432 bytes: the kernel model and encode()
    assert kvp_host_to_daemon(host.encode()) == daemon.encode()


def test_utf16_to_utf8_older_kernels_skip_what_does_not_fit() -> None:
    data = ("a" * 510 + "é" + "b").encode("utf-16-le")
    assert kernel_utf16_to_utf8(data, 1000, 511, skip_oversized=True) == b"a" * 510 + b"b"
