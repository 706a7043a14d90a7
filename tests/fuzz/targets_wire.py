"""Fuzz targets for every decoder in hvguest.wire.

Each decoder gets random and mutated bytes (seeded with valid messages from the
encoders); it may return or raise ``WireError`` naming the field, nothing else. Where a
decoder has an encoder, whatever decodes must also re-encode and decode to the same
value: a decoder that accepts what its encoder cannot write is a bug too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hvguest.errors import WireError
from hvguest.wire import fcopy, icmsg, ipconfig, kvp, kvp_kernel, pool, vmbus, vss
from hvguest.wire.kvp_layout import KVP_IP_MSG_SIZE, KVP_MSG_SIZE

from .harness import Target, fit, raw_seed, take_u32, wire_error_ok

KVP = KVP_MSG_SIZE
KVP_SIZES = (KVP, KVP - 1, KVP + 1, KVP_IP_MSG_SIZE)


def _seeds(*messages: bytes) -> tuple[bytes, ...]:
    return tuple(raw_seed(m) for m in messages)


KVP_SEEDS = _seeds(
    kvp.KvpSet(1, "key", "value").encode(),
    kvp.KvpGet(0, "key").encode(),
    kvp.KvpDelete(0, "key").encode(),
    kvp.KvpEnumerate(2, 3).encode(),
    kvp.KvpGetIpInfo(0, "00:15:5d:00:00:01", 2).encode(),
    kvp.KvpSetIpInfo(0, "{g}", 1, False, "1.2.3.4", "255.0.0.0", "1.1.1.1", "8.8.8.8").encode(),
    kvp.KvpRegister().encode(),
    kvp.kvp_enumerate_reply(kvp.KvpEnumerate(1, 0).encode(), "k", "v"),
)
HOST_KVP_SEEDS = _seeds(
    kvp.HostKvpMessage(kvp.KvpOp.SET, 0, "k", "v", kvp.RegType.REG_SZ).encode(),
    kvp.HostKvpMessage(kvp.KvpOp.SET, 0, "k", 7, kvp.RegType.REG_U32).encode(),
    kvp.HostKvpMessage(kvp.KvpOp.SET, 0, "k", 2**40, kvp.RegType.REG_U64).encode(),
    kvp.HostKvpMessage(kvp.KvpOp.ENUMERATE, 0, index=3).encode(),
    kvp.HostKvpMessage(kvp.KvpOp.GET, 0, "k").encode(),
    kvp.HostKvpMessage(kvp.KvpOp.DELETE, 0, "k").encode(),
    kvp.HostKvpIpMessage(5, 0, "a", 1, True, "1.2.3.4").encode(),
    kvp.HostKvpIpMessage(4, 0, "00-15-5D-00-00-01", 2).encode(),
)
FCOPY_SEEDS = tuple(
    raw_seed(m.encode(utf16=u))
    for u in (False, True)
    for m in (
        fcopy.FcopyStart("name", "/path", 3, 10),
        fcopy.FcopyWrite(0, b"data"),
        fcopy.FcopyComplete(),
        fcopy.FcopyCancel(),
    )
)
IC_SEEDS = _seeds(
    icmsg.build_negotiate_request([icmsg.IcVersion(3, 0)], [icmsg.IcVersion(4, 0)]),
    icmsg.build_negotiate_request(list(icmsg.UTIL_FW_VERSIONS), list(icmsg.KVP_SRV_VERSIONS)),
    icmsg.IcHeader(0, 0, icmsg.IcVersion(3, 0), 1, icmsg.IcVersion(4, 0), 16, 0, 1, 0).encode(),
)
VMBUS_SEEDS = _seeds(
    vmbus.build_inband_packet(b"payload!", 1),
    vmbus.ShutdownMsg(1, 2, 3, b"m").encode(),
    vmbus.HeartbeatMsg(5).encode(),
    vmbus.TimesyncMsg(1, 2, 3, 1).encode(),
    vmbus.TimesyncRefMsg(1, 2, 3, 4, 5).encode(),
    vmbus.RingHeader(1, 2, 3, 4, 5).encode()[:128],
)


def decoder(
    name: str,
    decode: Callable[[bytes], Any],
    *sizes: int,
    seeds: tuple[bytes, ...] = (),
    again: Callable[[Any], Any] | None = None,
) -> Target:
    """A target for ``decode``; ``again`` re-encodes and decodes a decoded value."""

    def run(data: bytes) -> bool:
        buf = fit(data, *sizes)
        try:
            value = decode(buf)
        except WireError as exc:
            wire_error_ok(exc)
            return False
        if again is not None:
            assert again(value) == value, f"{name}: decode(encode(x)) != x for {value!r}"
        return True

    return Target(name, run, seeds)


def _with_u32(fn: Callable[[int, bytes], Any], *sizes: int) -> Callable[[bytes], Any]:
    def call(data: bytes) -> Any:
        value, rest = take_u32(data)
        return fn(value, fit(rest, *sizes))

    return call


def _kvp_reply(op: int, buf: bytes) -> kvp.KvpReply:
    return kvp.decode_kvp_reply(op & 0xFF, buf)


def _kvp_builders(status: int, buf: bytes) -> bytes:
    """The replies built over a raw request: always 7432 bytes, never an exception."""
    for reply in (
        kvp.kvp_reply(buf, status),
        kvp.kvp_get_reply(buf, "value"),
        kvp.kvp_enumerate_reply(buf, "key", "value"),
        kvp.kvp_ip_info_reply(buf, kvp.KvpIpInfo("id", 2, True, "1.2.3.4")),
    ):
        assert len(reply) == KVP, f"KVP reply of {len(reply)} bytes"
    return buf


def _kernel_to_host(op: int, buf: bytes) -> tuple[int, bytes]:
    split = (op >> 8) % (len(buf) + 1)
    status, body = kvp_kernel.kvp_daemon_to_host(op & 0xFF, buf[:split], buf[split:])
    assert len(body) == split, "kvp_daemon_to_host changed the body's length"
    return status, body


def _kernel_from_host(flags: int, buf: bytes) -> bytes:
    out = kvp_kernel.kvp_host_to_daemon(buf, skip_oversized=bool(flags & 1))
    assert len(out) == KVP, f"kvp_host_to_daemon gave {len(out)} bytes"
    return out


def _utf_conversions(params: int, buf: bytes) -> object:
    """The kernel's UTF-16 <-> UTF-8 conversions respect their output bound."""
    inlen, maxout = (params & 0x3FFF) - 8, (params >> 14) & 0x3FFF
    out = kvp_kernel.kernel_utf16_to_utf8(buf, inlen, maxout, skip_oversized=bool(params >> 31))
    assert len(out) <= max(maxout, 0), f"utf16->utf8 wrote {len(out)} bytes, max {maxout}"
    out.decode("utf-8")  # whole characters only
    partial, _ok = kvp_kernel.kernel_utf8_to_utf16_partial(buf, maxout)
    assert len(partial) // 2 <= maxout, f"utf8->utf16 stored {len(partial) // 2} units"
    return kvp_kernel.kernel_utf8_to_utf16(buf, maxout)


def _vss_reply(status: int, buf: bytes) -> bytes:
    reply = vss.vss_reply(buf, status, None if status & 1 else status >> 1)
    assert len(reply) == vss.VSS_MSG_SIZE, f"VSS reply of {len(reply)} bytes"
    return reply


def _ic_response(status: int, buf: bytes) -> bytes:
    out = icmsg.ic_response(buf, status)
    assert len(out) == len(buf), "ic_response changed the payload's length"
    return out


_TABLES = [
    (icmsg.UTIL_FW_VERSIONS, icmsg.KVP_SRV_VERSIONS),
    (icmsg.VSS_FW_VERSIONS, icmsg.VSS_SRV_VERSIONS),
    (icmsg.FCOPY_FW_VERSIONS, icmsg.FCOPY_SRV_VERSIONS),
    (icmsg.SHUTDOWN_FW_VERSIONS, icmsg.SHUTDOWN_SRV_VERSIONS),
    (icmsg.TIMESYNC_FW_VERSIONS, icmsg.TIMESYNC_SRV_VERSIONS),
    (icmsg.HEARTBEAT_FW_VERSIONS, icmsg.HEARTBEAT_SRV_VERSIONS),
]


def _negotiate(which: int, buf: bytes) -> object:
    fw, srv = _TABLES[which % len(_TABLES)]
    response, got_fw, got_srv = icmsg.negotiate_response(buf, fw, srv)
    assert len(response) == len(buf), "negotiation response changed the payload's length"
    assert (got_fw is None) == (got_srv is None), "half a negotiation"
    assert got_fw is None or got_fw in fw, f"picked framework {got_fw} we do not offer"
    assert got_srv is None or got_srv in srv, f"picked service {got_srv} we do not offer"
    return response


def _ic_version(data: bytes) -> bool:
    packed, _ = take_u32(data)
    version = icmsg.IcVersion.from_packed(packed)
    assert version.packed == packed, f"IcVersion {version} does not pack back to {packed:#x}"
    return True


def _pool_text(buf: bytes) -> object:
    records, tail = pool.decode_pool(buf)
    assert 0 <= tail < pool.POOL_KEY_SIZE + pool.POOL_VALUE_SIZE, f"tail of {tail} bytes"
    for record in records:
        assert pool.PoolRecord.decode(record.encode()) == record, "pool record round trip"
        record.key_text(), record.value_text()
    return records


def _filetime(data: bytes) -> bool:
    ticks, _ = take_u32(data[4:])
    ticks = (ticks << 32) | take_u32(data)[0]
    ns = vmbus.filetime_to_unix_ns(ticks)
    assert vmbus.unix_ns_to_filetime(ns) == ticks, "FILETIME round trip"
    return True


def _fcopy(utf16: bool) -> Callable[[Any], Any]:
    return lambda m: fcopy.decode_fcopy_request(m.encode(utf16=utf16), utf16=utf16)


REC = pool.POOL_KEY_SIZE + pool.POOL_VALUE_SIZE
FC = (fcopy.FCOPY_START_SIZE, fcopy.FCOPY_DO_SIZE, 4, 52, 60, 1087)
VSS_SEEDS = _seeds(*(vss.VssMessage(op, 0).encode() for op in vss.VssOp))
REG_SEEDS = _seeds(vss.VSS_OP_REGISTER1.to_bytes(4, "little"), fcopy.FCOPY_REGISTER_MSG)
POOL_SEEDS = _seeds(pool.encode_pool([pool.PoolRecord.from_text("k", "v")] * 2) + b"x")


def _targets() -> list[Target]:
    t = [
        decoder("kvp_request", kvp.decode_kvp_request, *KVP_SIZES, seeds=KVP_SEEDS,
                again=lambda r: kvp.decode_kvp_request(r.encode())),
        decoder("kvp_register", kvp.decode_kvp_register, *KVP_SIZES, seeds=KVP_SEEDS),
        decoder("kvp_reply", _with_u32(_kvp_reply, *KVP_SIZES), seeds=KVP_SEEDS),
        decoder("kvp_ip_info", lambda b: kvp.KvpIpInfo.read_from(fit(b[1:], *KVP_SIZES),
                                                                  strict=bool(b[:1] == b"\1")),
                seeds=tuple(b"\1" + s for s in KVP_SEEDS)),
        decoder("kvp_reply_builders", _with_u32(_kvp_builders, *KVP_SIZES), seeds=KVP_SEEDS),
        decoder("host_kvp", kvp.HostKvpMessage.decode, *KVP_SIZES, seeds=HOST_KVP_SEEDS,
                again=lambda m: kvp.HostKvpMessage.decode(m.encode())),
        decoder("host_kvp_ip", kvp.HostKvpIpMessage.decode, *KVP_SIZES, seeds=HOST_KVP_SEEDS,
                again=lambda m: kvp.HostKvpIpMessage.decode(m.encode())),
        decoder("kernel_host_to_daemon", _with_u32(_kernel_from_host, *KVP_SIZES),
                seeds=HOST_KVP_SEEDS),
        decoder("kernel_daemon_to_host", _with_u32(_kernel_to_host), seeds=KVP_SEEDS),
        decoder("kernel_utf_conversions", _with_u32(_utf_conversions),
                seeds=_seeds("kéy✓😀".encode("utf-16-le"), "kéy✓😀".encode())),
        decoder("vss_message", vss.VssMessage.decode, 12, 11, 13, seeds=VSS_SEEDS,
                again=lambda m: vss.VssMessage.decode(m.encode())),
        decoder("vss_register", vss.decode_vss_register_reply, 4, 12, seeds=REG_SEEDS),
        decoder("vss_reply", _with_u32(_vss_reply), seeds=_seeds(bytes(12))),
        decoder("fcopy_request_utf8", lambda b: fcopy.decode_fcopy_request(b, utf16=False), *FC,
                seeds=FCOPY_SEEDS, again=_fcopy(False)),
        decoder("fcopy_request_utf16", lambda b: fcopy.decode_fcopy_request(b, utf16=True), *FC,
                seeds=FCOPY_SEEDS, again=_fcopy(True)),
        decoder("fcopy_register", fcopy.decode_fcopy_register_reply, 4, 8, seeds=REG_SEEDS),
        decoder("fcopy_reply", fcopy.decode_fcopy_reply, 4, 3, 5, seeds=REG_SEEDS,
                again=lambda status: fcopy.decode_fcopy_reply(fcopy.fcopy_reply(status))),
        decoder("pool_record", pool.PoolRecord.decode, REC, seeds=POOL_SEEDS,
                again=lambda r: pool.PoolRecord.decode(r.encode())),
        decoder("pool_file", _pool_text, REC, 2 * REC, 2 * REC + 7, seeds=POOL_SEEDS),
        decoder("ic_header", icmsg.IcHeader.decode, 28, seeds=IC_SEEDS,
                again=lambda h: icmsg.IcHeader.decode(h.encode())),
        decoder("ic_response", _with_u32(_ic_response), seeds=IC_SEEDS),
        decoder("ic_negotiate", _with_u32(_negotiate), seeds=IC_SEEDS),
        decoder("ic_parse_negotiate", icmsg.parse_negotiate_response, seeds=IC_SEEDS),
        decoder("ic_version", _ic_version, seeds=(b"\0\0\3\0",)),
        decoder("vmbus_descriptor", vmbus.VmPacketDescriptor.decode, 16, seeds=VMBUS_SEEDS,
                again=lambda d: vmbus.VmPacketDescriptor.decode(d.encode())),
        decoder("vmbus_split_packet", vmbus.split_packet, seeds=VMBUS_SEEDS),
        decoder("vmbus_ring_header", vmbus.RingHeader.decode, 68, 4096, seeds=VMBUS_SEEDS,
                again=lambda h: vmbus.RingHeader.decode(h.encode())),
        decoder("vmbus_heartbeat", vmbus.HeartbeatMsg.decode, 8, 40, seeds=VMBUS_SEEDS,
                again=lambda m: vmbus.HeartbeatMsg.decode(m.encode())),
        decoder("vmbus_shutdown", vmbus.ShutdownMsg.decode, 2060, seeds=VMBUS_SEEDS,
                again=lambda m: vmbus.ShutdownMsg.decode(m.encode())),
        decoder("vmbus_timesync", vmbus.TimesyncMsg.decode, 25, seeds=VMBUS_SEEDS,
                again=lambda m: vmbus.TimesyncMsg.decode(m.encode())),
        decoder("vmbus_timesync_ref", vmbus.TimesyncRefMsg.decode, 22, seeds=VMBUS_SEEDS,
                again=lambda m: vmbus.TimesyncRefMsg.decode(m.encode())),
        decoder("vmbus_filetime", _filetime),
        Target("ip_config_strings", _ip_strings, IP_SEEDS, max_len=1100),
    ]
    for cls in (fcopy.FcopyStart, fcopy.FcopyWrite, fcopy.FcopyComplete, fcopy.FcopyCancel):
        for utf16 in (False, True):
            name = f"fcopy_{cls.__name__[5:].lower()}_{'utf16' if utf16 else 'utf8'}"
            t.append(decoder(name, _class_decode(cls, utf16), *FC, seeds=FCOPY_SEEDS,
                             again=_fcopy(utf16)))
    return t


RENDERED = frozenset("0123456789abcdefABCDEF:./")
IP_SEEDS = (b"\x00192.168.1.10;10.0.0.1", b"\x01fe80::1", b"\x0224", b"\x03255.255.255.0",
            b"\x04ffff:ffff::", b"\x00fe80::1%eth0\n", b"\x01fe80::1%eth0\n")


def _ip_strings(data: bytes) -> bool:
    """The host's SET_IP_INFO strings: refused with HostValueError, or parsed into
    values whose rendering holds nothing but address characters."""
    which, text = data[:1], data[1:].decode("utf-8", "surrogateescape")
    try:
        if which in (b"\x00", b""):
            values = ipconfig.parse_addresses("ip_addr", text)
            rendered = [ipconfig.text(v) for v in values]
        elif which == b"\x01":
            rendered = [ipconfig.text(ipconfig.parse_address("gate_way", text))]
        else:
            rendered = [str(ipconfig.parse_prefix("sub_net", text, 4 if which[0] % 2 else 6))]
    except ipconfig.HostValueError as exc:
        assert "\n" not in str(exc) and "\x1b" not in str(exc), f"unescaped: {exc!s}"
        return False
    for item in rendered:
        assert item and RENDERED.issuperset(item), f"rendered {item!r} from {text!r}"
    return True


def _class_decode(cls: Any, utf16: bool) -> Callable[[bytes], Any]:
    return lambda b: cls.decode(b, utf16=utf16)


WIRE_TARGETS = _targets()
