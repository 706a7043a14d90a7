"""Property tests: encode/decode round trips, and decoders that only ever raise WireError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvguest.errors import WireError
from hvguest.wire import fcopy, icmsg, kvp, kvp_kernel, pool, vmbus, vss

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\0")


def text(max_bytes: int, max_chars: int) -> st.SearchStrategy[str]:
    """Text without NUL or lone surrogates whose UTF-8 fits ``max_bytes``."""
    return st.text(CHARS, max_size=max_chars).filter(lambda s: len(s.encode()) <= max_bytes)


def units_text(max_units: int, max_chars: int) -> st.SearchStrategy[str]:
    return st.text(CHARS, max_size=max_chars).filter(
        lambda s: len(s.encode("utf-16-le")) // 2 <= max_units
    )


u8 = st.integers(0, 2**8 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
pools = st.sampled_from(list(kvp.KvpPool))
keys = text(511, 140)
values = text(2047, 300)

kvp_requests: st.SearchStrategy[kvp.KvpRequest] = st.one_of(
    st.builds(kvp.KvpGet, pools, keys),
    st.builds(kvp.KvpSet, pools, keys, values),
    st.builds(kvp.KvpDelete, pools, keys),
    st.builds(kvp.KvpEnumerate, pools, st.integers(0, 2**31 - 1)),
    st.builds(kvp.KvpGetIpInfo, pools, text(255, 60), u8),
    st.builds(
        kvp.KvpSetIpInfo,
        pools,
        text(255, 60),
        u8,
        st.booleans(),
        values,
        values,
        text(1023, 200),
        values,
    ),
    st.builds(kvp.KvpRegister, text(511, 40)),
)
ip_infos = st.builds(
    kvp.KvpIpInfo, text(255, 60), u8, st.booleans(), values, values, text(1023, 200), values
)


@FAST
@given(kvp_requests)
def test_kvp_request_round_trip(request: kvp.KvpRequest) -> None:
    encoded = request.encode()
    assert len(encoded) == kvp.KVP_MSG_SIZE
    assert kvp.decode_kvp_request(encoded) == request


@FAST
@given(pools, keys, values)
def test_kvp_enumerate_and_get_replies_round_trip(pool_: int, key: str, value: str) -> None:
    request = kvp.KvpEnumerate(pool_, 0).encode()
    reply = kvp.kvp_enumerate_reply(request, key, value)
    assert kvp.decode_kvp_reply(kvp.KvpOp.ENUMERATE, reply) == kvp.KvpReply(0, key, value)
    reply = kvp.kvp_get_reply(kvp.KvpGet(pool_, key).encode(), value)
    assert kvp.decode_kvp_reply(kvp.KvpOp.GET, reply).value == value


@FAST
@given(ip_infos)
def test_kvp_ip_reply_round_trip(info: kvp.KvpIpInfo) -> None:
    reply = kvp.kvp_ip_info_reply(kvp.KvpGetIpInfo(0, info.adapter_id).encode(), info)
    assert kvp.decode_kvp_reply(kvp.KvpOp.GET_IP_INFO, reply).ip_info == info


host_kvp = st.one_of(
    st.builds(
        kvp.HostKvpMessage,
        st.sampled_from([kvp.KvpOp.GET, kvp.KvpOp.SET, kvp.KvpOp.DELETE, kvp.KvpOp.ENUMERATE]),
        u8,
        units_text(255, 100),
        units_text(1023, 300),
        st.sampled_from([0, kvp.RegType.REG_SZ]),
        u32,
    ).map(
        # DELETE carries no value, GET/SET/DELETE no index
        lambda m: kvp.HostKvpMessage(
            m.operation,
            m.pool,
            m.key,
            "" if m.operation == kvp.KvpOp.DELETE else m.value,
            0 if m.operation == kvp.KvpOp.DELETE else m.value_type,
            m.index if m.operation == kvp.KvpOp.ENUMERATE else 0,
        )
    ),
    st.builds(
        kvp.HostKvpMessage,
        st.just(kvp.KvpOp.SET),
        u8,
        units_text(255, 100),
        u32,
        st.just(kvp.RegType.REG_U32),
    ),
    st.builds(
        kvp.HostKvpMessage,
        st.just(kvp.KvpOp.SET),
        u8,
        units_text(255, 100),
        u64,
        st.just(kvp.RegType.REG_U64),
    ),
)


@FAST
@given(host_kvp)
def test_host_kvp_round_trip(msg: kvp.HostKvpMessage) -> None:
    assert kvp.HostKvpMessage.decode(msg.encode()) == msg


@FAST
@given(
    st.builds(
        kvp.HostKvpIpMessage,
        st.sampled_from([4, 5]),
        u8,
        units_text(128, 60),
        u8,
        st.booleans(),
        units_text(1024, 300),
        units_text(1024, 300),
        units_text(512, 200),
        units_text(1024, 300),
    )
)
def test_host_kvp_ip_round_trip(msg: kvp.HostKvpIpMessage) -> None:
    assert kvp.HostKvpIpMessage.decode(msg.encode()) == msg


@FAST
@given(units_text(254, 100), units_text(1022, 300))
def test_kernel_model_set_then_enumerate_preserves_text(key: str, value: str) -> None:
    host_set = kvp.HostKvpMessage(kvp.KvpOp.SET, 0, key, value, kvp.RegType.REG_SZ)
    request = kvp.decode_kvp_request(kvp_kernel.kvp_host_to_daemon(host_set.encode()))
    assert isinstance(request, kvp.KvpSet)
    # the kernel cuts at 511/2047 UTF-8 bytes, on a character boundary
    assert key.startswith(request.key) and value.startswith(request.value)
    host_enum = kvp.HostKvpMessage(kvp.KvpOp.ENUMERATE, 0, index=0)
    daemon_msg = kvp_kernel.kvp_host_to_daemon(host_enum.encode())
    reply = kvp.kvp_enumerate_reply(daemon_msg, request.key, request.value)
    status, body = kvp_kernel.kvp_daemon_to_host(kvp.KvpOp.ENUMERATE, host_enum.encode(), reply)
    answer = kvp.HostKvpMessage.decode(body)
    assert status == 0 and (answer.key, answer.value) == (request.key, request.value)


@FAST
@given(st.sampled_from(list(vss.VssOp)), u32)
def test_vss_round_trip(op: int, flags: int) -> None:
    assert vss.VssMessage.decode(vss.VssMessage(op, flags).encode()) == vss.VssMessage(op, flags)


names16 = units_text(259, 120)
fcopy_requests = st.one_of(
    st.builds(fcopy.FcopyStart, names16, names16, u32, u64),
    st.builds(fcopy.FcopyWrite, u64, st.binary(max_size=fcopy.DATA_FRAGMENT)),
    st.just(fcopy.FcopyComplete()),
    st.just(fcopy.FcopyCancel()),
)


@FAST
@given(fcopy_requests, st.booleans())
def test_fcopy_round_trip(msg: fcopy.FcopyRequest, utf16: bool) -> None:
    if isinstance(msg, fcopy.FcopyStart) and not utf16:
        if len(msg.file_name.encode()) > 259 or len(msg.path_name.encode()) > 259:
            return
    assert fcopy.decode_fcopy_request(msg.encode(utf16=utf16), utf16=utf16) == msg


no_nul = st.binary(max_size=600).map(lambda b: b.replace(b"\0", b"x"))


@FAST
@given(
    st.lists(st.tuples(no_nul.map(lambda b: b[:511]), no_nul), max_size=4), st.binary(max_size=2559)
)
def test_pool_round_trip(items: list[tuple[bytes, bytes]], tail: bytes) -> None:
    records = [pool.PoolRecord(k, v) for k, v in items]
    assert pool.decode_pool(pool.encode_pool(records) + tail) == (records, len(tail))


versions = st.builds(icmsg.IcVersion, u16, u16)


@FAST
@given(st.builds(icmsg.IcHeader, u32, u32, versions, u16, versions, u16, u32, u8, u8))
def test_ic_header_round_trip(header: icmsg.IcHeader) -> None:
    assert icmsg.IcHeader.decode(header.encode()) == header
    assert icmsg.IcVersion.from_packed(header.framever.packed) == header.framever


@FAST
@given(
    st.lists(versions, max_size=8),
    st.lists(versions, max_size=8),
    st.lists(versions, min_size=1, max_size=4),
    st.lists(versions, min_size=1, max_size=4),
)
def test_negotiation_picks_our_first_offered_version(
    host_fw: list[icmsg.IcVersion],
    host_srv: list[icmsg.IcVersion],
    fw: list[icmsg.IcVersion],
    srv: list[icmsg.IcVersion],
) -> None:
    payload = icmsg.build_negotiate_request(host_fw, host_srv)
    response, got_fw, got_srv = icmsg.negotiate_response(payload, fw, srv)
    assert len(response) == len(payload)
    want_fw = next((v for v in fw if v in host_fw), None)
    want_srv = next((v for v in srv if v in host_srv), None)
    if want_fw is None or want_srv is None:
        assert (got_fw, got_srv) == (None, None)
    else:
        assert (got_fw, got_srv) == (want_fw, want_srv)
    assert icmsg.parse_negotiate_response(response)[1:] == (got_fw, got_srv)


@FAST
@given(st.binary(max_size=200), u64)
def test_packet_round_trip(payload: bytes, trans_id: int) -> None:
    packet = vmbus.build_inband_packet(payload, trans_id)
    assert len(packet) % 8 == 0
    desc, body = vmbus.split_packet(packet)
    assert desc.trans_id == trans_id and body[: len(payload)] == payload
    assert body[len(payload) :] == bytes(len(body) - len(payload)) and len(body) - len(payload) < 8


BODY_STRATEGIES: list[st.SearchStrategy[Any]] = [
    st.builds(vmbus.HeartbeatMsg, u64),
    st.builds(
        vmbus.ShutdownMsg, u32, u32, u32, st.binary(max_size=2048).map(lambda b: b.rstrip(b"\0"))
    ),
    st.builds(vmbus.TimesyncRefMsg, u64, u64, u8, u8, u8),
    st.builds(vmbus.TimesyncMsg, u64, u64, u64, u8),
    st.builds(vmbus.RingHeader, u32, u32, u32, u32, u32),
    st.builds(vmbus.VmPacketDescriptor, u16, st.just(2), st.integers(2, 2**16 - 1), u16, u64),
]


@FAST
@given(st.one_of(*BODY_STRATEGIES))
def test_vmbus_bodies_round_trip(msg: Any) -> None:
    assert type(msg).decode(msg.encode()) == msg


@FAST
@given(st.integers(-(2**62), 2**62))
def test_filetime_round_trip(ns: int) -> None:
    ns -= ns % 100
    assert vmbus.filetime_to_unix_ns(vmbus.unix_ns_to_filetime(ns)) == ns


# ---------------------------------------------------------------------------
# Robustness: random bytes and mutations of valid messages raise only WireError

DECODERS: dict[str, Callable[[bytes], object]] = {
    "kvp_request": kvp.decode_kvp_request,
    "kvp_register": kvp.decode_kvp_register,
    "kvp_reply_get": lambda b: kvp.decode_kvp_reply(kvp.KvpOp.GET, b),
    "kvp_reply_enum": lambda b: kvp.decode_kvp_reply(kvp.KvpOp.ENUMERATE, b),
    "kvp_reply_ip": lambda b: kvp.decode_kvp_reply(kvp.KvpOp.GET_IP_INFO, b),
    "host_kvp": kvp.HostKvpMessage.decode,
    "host_kvp_ip": kvp.HostKvpIpMessage.decode,
    "kvp_reply_builder": lambda b: kvp.kvp_reply(b, 0),
    "kernel_host_to_daemon": kvp_kernel.kvp_host_to_daemon,
    "kernel_daemon_to_host": lambda b: kvp_kernel.kvp_daemon_to_host(b[0] if b else 0, b, b),
    "vss": vss.VssMessage.decode,
    "vss_register": vss.decode_vss_register_reply,
    "vss_reply": lambda b: vss.vss_reply(b, 0),
    "fcopy_utf8": lambda b: fcopy.decode_fcopy_request(b, utf16=False),
    "fcopy_utf16": lambda b: fcopy.decode_fcopy_request(b, utf16=True),
    "fcopy_register": fcopy.decode_fcopy_register_reply,
    "pool_record": pool.PoolRecord.decode,
    "pool_text": lambda b: [r.key_text() + r.value_text() for r in pool.decode_pool(b)[0]],
    "ic_header": icmsg.IcHeader.decode,
    "ic_response": lambda b: icmsg.ic_response(b, 0),
    "negotiate": lambda b: icmsg.negotiate_response(
        b, icmsg.KVP_FW_VERSIONS, icmsg.KVP_SRV_VERSIONS
    ),
    "parse_negotiate": icmsg.parse_negotiate_response,
    "descriptor": vmbus.VmPacketDescriptor.decode,
    "split_packet": vmbus.split_packet,
    "ring_header": vmbus.RingHeader.decode,
    "heartbeat": vmbus.HeartbeatMsg.decode,
    "shutdown": vmbus.ShutdownMsg.decode,
    "timesync": vmbus.TimesyncMsg.decode,
    "timesync_ref": vmbus.TimesyncRefMsg.decode,
}

SEEDS: list[bytes] = [
    kvp.KvpSet(1, "key", "value").encode(),
    kvp.KvpGet(0, "key").encode(),
    kvp.KvpDelete(0, "key").encode(),
    kvp.KvpEnumerate(2, 3).encode(),
    kvp.KvpSetIpInfo(0, "{g}", 1, True, "1.2.3.4", "255.0.0.0", "1.1.1.1", "8.8.8.8").encode(),
    kvp.KvpRegister().encode(),
    kvp.kvp_enumerate_reply(kvp.KvpEnumerate(1, 0).encode(), "k", "v"),
    kvp.HostKvpMessage(1, 0, "k", "v", kvp.RegType.REG_SZ).encode(),
    kvp.HostKvpMessage(3, 0, "k", "v", kvp.RegType.REG_SZ).encode(),
    kvp.HostKvpIpMessage(5, 0, "a", 1, True, "1.2.3.4").encode(),
    vss.VssMessage(5).encode(),
    fcopy.FcopyStart("name", "/path", 3, 10).encode(),
    fcopy.FcopyStart("name", "/path", 3, 10).encode(utf16=True),
    fcopy.FcopyWrite(0, b"data").encode(),
    fcopy.FcopyCancel().encode(),
    pool.PoolRecord.from_text("k", "v").encode(),
    icmsg.build_negotiate_request([icmsg.IcVersion(3, 0)], [icmsg.IcVersion(4, 0)]),
    vmbus.build_inband_packet(b"payload!", 1),
    vmbus.ShutdownMsg(1, 2, 3, b"m").encode(),
    b"",
]

edits = st.lists(st.tuples(st.integers(0, 7431), u8), max_size=12)


def mutate(data: st.DataObject) -> bytes:
    seed = bytearray(data.draw(st.sampled_from(SEEDS)))
    for pos, value in data.draw(edits):
        if seed:
            seed[pos % len(seed)] = value
    # hot spots: the header and size fields, where range checks live
    for pos, value in data.draw(st.lists(st.tuples(st.integers(0, 63), u8), max_size=6)):
        if pos < len(seed):
            seed[pos] = value
    size = data.draw(st.sampled_from([None, 0, 3, 4, 12, 27, 28, 36, 52, 1087, 7431, 7433]))
    if size is not None:
        seed = (seed + bytes(max(0, size - len(seed))))[:size]
    return bytes(seed)


def only_wire_errors(name: str, buf: bytes) -> None:
    try:
        DECODERS[name](buf)
    except WireError:
        pass


DECODER_NAMES = sorted(DECODERS)


@pytest.mark.parametrize("name", DECODER_NAMES)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_messages_raise_only_wire_error(name: str, data: st.DataObject) -> None:
    only_wire_errors(name, mutate(data))


@pytest.mark.parametrize("name", DECODER_NAMES)
@settings(max_examples=30, deadline=None)
@given(buf=st.binary(max_size=300))
def test_random_bytes_raise_only_wire_error(name: str, buf: bytes) -> None:
    only_wire_errors(name, buf)


@pytest.mark.parametrize("name", DECODER_NAMES)
@settings(max_examples=15, deadline=None)
@given(size=st.sampled_from([2560, 6196, 7428, 7432, 1088]), data=st.data())
def test_random_full_size_buffers_raise_only_wire_error(
    name: str, size: int, data: st.DataObject
) -> None:
    fill = data.draw(u8)
    buf = bytearray(bytes([fill]) * size)
    for pos, value in data.draw(edits):
        buf[pos % size] = value
    only_wire_errors(name, bytes(buf))
