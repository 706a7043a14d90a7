"""The KVP role: requests in, replies and actions out (no I/O)."""

from __future__ import annotations

import struct

import pytest

from hvguest.errors import LocalUsageError
from hvguest.roles.kvp import (
    ApplyIpConfig,
    KvpRole,
    KvpState,
    Log,
    PoolChanged,
    normalise_mac,
    parse_ip_config,
)
from hvguest.wire.ipconfig import HostValueError
from hvguest.wire.kvp import (
    KVP_MSG_SIZE,
    KvpDelete,
    KvpEnumerate,
    KvpGet,
    KvpGetIpInfo,
    KvpIpInfo,
    KvpSet,
    KvpSetIpInfo,
    decode_kvp_reply,
)
from hvguest.wire.status import HvStatus

OK, FAIL, CONT, INVAL = (
    HvStatus.HV_S_OK,
    HvStatus.HV_E_FAIL,
    HvStatus.HV_S_CONT,
    HvStatus.HV_INVALIDARG,
)


class FakeData:
    def __init__(self):
        self.pools = {n: {} for n in range(5)}
        self.macs = {
            "00:15:5D:00:00:01": KvpIpInfo(
                "", 1, False, "192.0.2.10", "255.255.255.0", "192.0.2.1;", "192.0.2.53;"
            )
        }

    def get(self, pool, key):
        return self.pools[pool].get(key)

    def set(self, pool, key, value):
        self.pools[pool][key] = value

    def delete(self, pool, key):
        return self.pools[pool].pop(key, None) is not None

    def item(self, pool, index):
        items = list(self.pools[pool].items())
        return items[index] if index < len(items) else None

    def auto_items(self):
        return [("FullyQualifiedDomainName", "guest.example"), ("OSName", "Debian GNU/Linux")]

    def ip_info(self, mac, family):
        return self.macs.get(mac)


@pytest.fixture()
def role():
    r = KvpRole(FakeData())
    r.registered("3.1")
    return r


def status_of(reply: bytes) -> int:
    return struct.unpack_from("<I", reply)[0]


def test_set_get_enumerate_delete(role):
    res = role.handle(KvpSet(0, "key", "value").encode(), 1.0)
    assert res.status == OK and status_of(res.reply) == OK
    assert PoolChanged(0) in res.actions
    res = role.handle(KvpGet(0, "key").encode(), 2.0)
    assert decode_kvp_reply(0, res.reply).value == "value"
    res = role.handle(KvpEnumerate(0, 0).encode(), 3.0)
    reply = decode_kvp_reply(3, res.reply)
    assert (reply.status, reply.key, reply.value) == (0, "key", "value")
    assert role.handle(KvpEnumerate(0, 1).encode(), 3.0).status == CONT
    assert role.handle(KvpDelete(0, "key").encode(), 4.0).status == OK
    assert role.handle(KvpDelete(0, "key").encode(), 4.0).status == CONT
    assert role.handle(KvpGet(0, "key").encode(), 5.0).status == CONT
    assert role.last == ("GET", "HV_S_CONT", 5.0)
    assert role.counters.requests == 7 and role.counters.failures == 0


def test_auto_pool_is_generated(role):
    reply = decode_kvp_reply(3, role.handle(KvpEnumerate(2, 1).encode(), 0).reply)
    assert (reply.key, reply.value) == ("OSName", "Debian GNU/Linux")
    assert role.handle(KvpEnumerate(2, 2).encode(), 0).status == CONT
    assert decode_kvp_reply(0, role.handle(KvpGet(2, "OSName").encode(), 0).reply).value == (
        "Debian GNU/Linux"
    )


def raw_msg(op, pool, **fields):
    buf = bytearray(KVP_MSG_SIZE)
    buf[0], buf[1] = op, pool
    for offset, data in fields.values():
        buf[offset : offset + len(data)] = data
    return bytes(buf)


@pytest.mark.parametrize(
    ("message", "status"),
    [
        (raw_msg(3, 5), FAIL),
        (raw_msg(3, 200), FAIL),
        (raw_msg(3, 255), FAIL),
        (raw_msg(9, 0), FAIL),  # unknown op: the C daemon says OK
        (raw_msg(3, 0, i=(4, struct.pack("<I", 1 << 31))), CONT),
        (raw_msg(3, 0, i=(4, struct.pack("<I", 0xFFFFFFFF))), CONT),
        (raw_msg(0, 0, s=(8, struct.pack("<I", 0)), k=(16, b"k\0")), INVAL),
        (raw_msg(0, 0, s=(8, struct.pack("<I", 0xFFFFFFFF)), k=(16, b"k\0")), INVAL),
        (raw_msg(1, 0, s=(8, struct.pack("<II", 2, 0xFFFFFFFF)), k=(16, b"k\0")), INVAL),
        (raw_msg(0, 0, s=(8, struct.pack("<I", 512)), k=(16, b"k" * 512)), INVAL),
        (raw_msg(0, 0, s=(8, struct.pack("<I", 3)), k=(16, b"\xff\xfe\0")), INVAL),
        (raw_msg(2, 0, s=(4, struct.pack("<I", 0)), k=(8, b"k\0")), INVAL),
        (KvpGet(0, "k").encode()[:100], FAIL),
        (KvpGet(0, "k").encode() + b"\0" * 8, FAIL),
        (b"", FAIL),
        (raw_msg(100, 0), FAIL),
    ],
)
def test_bad_requests_get_failure_replies_and_state_survives(role, message, status):
    res = role.handle(message, 0)
    assert res.status == status
    assert len(res.reply) == KVP_MSG_SIZE and status_of(res.reply) == status
    assert any(isinstance(a, Log) for a in res.actions)
    assert role.state is KvpState.READY
    assert role.handle(KvpSet(1, "after", "ok").encode(), 0).status == OK
    assert role.data.pools[0] == {}


def test_store_failure_is_e_fail(role):
    def boom(*args):
        raise LocalUsageError("KVP value is 3000 bytes, limit 2047 (pool 0)")

    role.data.set = boom
    res = role.handle(KvpSet(0, "k", "v").encode(), 0)
    assert res.status == FAIL
    assert "3000 bytes" in res.actions[0].args[1]


@pytest.mark.parametrize("mac", ["00:15:5D:00:00:01", "00:15:5d:00:00:01", "00-15-5d-00-00-01"])
def test_get_ip_info_mac_case_insensitive(role, mac):
    res = role.handle(KvpGetIpInfo(0, mac, 0).encode(), 0)
    info = decode_kvp_reply(4, res.reply).ip_info
    assert res.status == OK
    assert info.adapter_id == mac and info.ip_addr == "192.0.2.10"
    assert info.gate_way == "192.0.2.1;"


def test_get_ip_info_unknown_mac(role):
    assert role.handle(KvpGetIpInfo(0, "00:15:5D:FF:FF:FF", 0).encode(), 0).status == FAIL
    assert role.handle(KvpGetIpInfo(0, "not a mac", 0).encode(), 0).status == FAIL


def set_ip(**kw):
    base = dict(
        pool=0,
        adapter_id="{A3C5E2F0-1111-2222-3333-444455556666}",
        addr_family=3,
        dhcp_enabled=False,
        ip_addr="192.0.2.20;2001:db8::20",
        sub_net="255.255.255.0;64",
        gate_way="192.0.2.1;",
        dns_addr="192.0.2.53; 2001:db8::53;",
    )
    base.update(kw)
    return KvpSetIpInfo(**base)


def test_set_ip_info_becomes_an_action_then_a_reply(role):
    res = role.handle(set_ip().encode(), 0)
    assert res.reply is None and role.state is KvpState.APPLYING
    (action,) = res.actions
    assert isinstance(action, ApplyIpConfig)
    cfg = action.config
    assert cfg.adapter_id == "a3c5e2f0-1111-2222-3333-444455556666"
    assert [a.compressed for a in cfg.addresses] == ["192.0.2.20/24", "2001:db8::20/64"]
    assert [g.compressed for g in cfg.gateways] == ["192.0.2.1"]
    assert [d.compressed for d in cfg.dns] == ["192.0.2.53", "2001:db8::53"]
    done = role.ip_config_done(HvStatus.HV_GUID_NOTFOUND, "no such adapter", 1.0)
    assert status_of(done.reply) == HvStatus.HV_GUID_NOTFOUND
    assert role.state is KvpState.READY
    with pytest.raises(LocalUsageError):
        role.ip_config_done(0, "", 2.0)


@pytest.mark.parametrize(
    "kw",
    [
        {"ip_addr": "192.0.2.300"},
        {"sub_net": "255.255.255.0"},
        {"sub_net": "255.0.255.0;64"},
        {"gate_way": "gw"},
        {"dns_addr": "dns.example"},
        {"adapter_id": ""},
    ],
)
def test_set_ip_info_invalid_is_invalidarg(role, kw):
    res = role.handle(set_ip(**kw).encode(), 0)
    assert res.status == INVAL and status_of(res.reply) == INVAL
    assert role.state is KvpState.READY


def test_dhcp_ignores_addresses_but_still_checks_them():
    cfg = parse_ip_config(set_ip(dhcp_enabled=True, ip_addr="192.0.2.20", sub_net=""))
    assert cfg.dhcp and cfg.addresses == ()
    with pytest.raises(HostValueError, match="ip_addr 'x'"):
        parse_ip_config(set_ip(dhcp_enabled=True, ip_addr="x", sub_net=""))


def test_refusal_log_names_field_and_escaped_value(role):
    res = role.handle(set_ip(dns_addr="fe80::53%x\n    pre-up reboot").encode(), 0)
    assert res.status == INVAL
    (log,) = res.actions
    line = log.message % log.args
    assert line == (
        "SET_IP_INFO refused: dns_addr 'fe80::53%x\\n    pre-up reboot': character '%' at 8"
        " is not allowed in an address list"
    )


def test_helpers():
    assert normalise_mac("00155d000001") == "00:15:5D:00:00:01"
    assert normalise_mac("00:15:5d:00:00") is None


def test_requests_before_registration_are_a_bug():
    r = KvpRole(FakeData())
    with pytest.raises(LocalUsageError):
        r.handle(KvpGet(0, "k").encode(), 0)
    r.registered("3.1")
    r.lost()
    assert r.state is KvpState.UNREGISTERED


def test_enumerating_an_item_the_host_sees_cut_is_logged(role):
    role.data.pools[1]["long"] = "x" * 1500
    role.data.pools[1]["ok"] = "y" * 1022
    res = role.handle(KvpEnumerate(1, 0).encode(), 0)
    assert res.status == OK
    (note,) = res.actions
    assert "value is 1500 UTF-16 units, the host sees the first 1022" in note.args[2]
    assert role.handle(KvpEnumerate(1, 1).encode(), 0).actions == ()
