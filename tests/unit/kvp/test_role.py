"""The KVP role: requests in, replies and actions out (no I/O)."""

from __future__ import annotations

import struct

import pytest

from hvguest.errors import LocalUsageError
from hvguest.roles.kvp import (
    ApplyIpConfig,
    DeletePool,
    IpApplied,
    KvpRole,
    KvpState,
    Log,
    PoolDone,
    PoolFailed,
    Step,
    WritePool,
    normalise_mac,
)
from hvguest.wire.ipconfig import HostValueError, parse_ip_config
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

    def item(self, pool, index):
        items = list(self.pools[pool].items())
        return items[index] if index < len(items) else None

    def auto_items(self):
        return [("FullyQualifiedDomainName", "guest.example"), ("OSName", "Debian GNU/Linux")]

    def ip_info(self, mac, family):
        return self.macs.get(mac)


class Served:
    """A request served the way the daemon serves it: the role's pool actions carried
    out on the fake pools and their outcome handed back through complete()."""

    def __init__(self, role: KvpRole, message: bytes, now: float, fail: str = "") -> None:
        step = role.handle(message, now)
        self.actions = list(step.actions)
        for action in step.actions:
            if isinstance(action, WritePool | DeletePool):
                assert step.reply is None, "no reply before the write's outcome"
                step = role.complete(self._carry_out(role, action, fail), now)
                self.actions += step.actions
        self.reply = step.reply
        self.status = status_of(step.reply)

    @staticmethod
    def _carry_out(role, action, fail):
        if fail:
            return PoolFailed(fail)
        pool = role.view.pools[action.pool]
        if isinstance(action, WritePool):
            pool[action.key] = action.value
            return PoolDone()
        return PoolDone(pool.pop(action.key, None) is not None)


@pytest.fixture()
def role():
    r = KvpRole(FakeData())
    r.registered("3.1")
    return r


def status_of(reply: bytes) -> int:
    return struct.unpack_from("<I", reply)[0]


def test_set_get_enumerate_delete(role):
    res = Served(role, KvpSet(0, "key", "value").encode(), 1.0)
    assert res.status == OK and status_of(res.reply) == OK
    assert WritePool(0, "key", "value") in res.actions
    res = Served(role, KvpGet(0, "key").encode(), 2.0)
    assert decode_kvp_reply(0, res.reply).value == "value"
    res = Served(role, KvpEnumerate(0, 0).encode(), 3.0)
    reply = decode_kvp_reply(3, res.reply)
    assert (reply.status, reply.key, reply.value) == (0, "key", "value")
    assert Served(role, KvpEnumerate(0, 1).encode(), 3.0).status == CONT
    assert Served(role, KvpDelete(0, "key").encode(), 4.0).status == OK
    assert Served(role, KvpDelete(0, "key").encode(), 4.0).status == CONT
    assert Served(role, KvpGet(0, "key").encode(), 5.0).status == CONT
    assert role.last == ("GET", "HV_S_CONT", 5.0)
    assert role.counters.requests == 7 and role.counters.failures == 0


def test_auto_pool_is_generated(role):
    reply = decode_kvp_reply(3, Served(role, KvpEnumerate(2, 1).encode(), 0).reply)
    assert (reply.key, reply.value) == ("OSName", "Debian GNU/Linux")
    assert Served(role, KvpEnumerate(2, 2).encode(), 0).status == CONT
    assert decode_kvp_reply(0, Served(role, KvpGet(2, "OSName").encode(), 0).reply).value == (
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
    res = Served(role, message, 0)
    assert res.status == status
    assert len(res.reply) == KVP_MSG_SIZE and status_of(res.reply) == status
    assert any(isinstance(a, Log) for a in res.actions)
    assert role.state is KvpState.READY
    assert Served(role, KvpSet(1, "after", "ok").encode(), 0).status == OK
    assert role.view.pools[0] == {}


def test_store_failure_is_e_fail(role):
    res = Served(role, KvpSet(0, "k", "v").encode(), 0,
                 fail="KVP value is 3000 bytes, limit 2047 (pool 0)")
    assert res.status == FAIL
    (note,) = [a for a in res.actions if isinstance(a, Log)]
    assert "3000 bytes" in note.args[1] and note.fields == {"POOL": "0"}


def test_lookup_failure_is_e_fail(role):
    def boom(*args):
        raise LocalUsageError("KVP value of 'k' is not valid UTF-8 (pool 0)")

    role.view.get = boom
    res = Served(role, KvpGet(0, "k").encode(), 0)
    assert res.status == FAIL and "not valid UTF-8" in res.actions[0].args[1]
    assert role.state is KvpState.READY


@pytest.mark.parametrize("mac", ["00:15:5D:00:00:01", "00:15:5d:00:00:01", "00-15-5d-00-00-01"])
def test_get_ip_info_mac_case_insensitive(role, mac):
    res = Served(role, KvpGetIpInfo(0, mac, 0).encode(), 0)
    info = decode_kvp_reply(4, res.reply).ip_info
    assert res.status == OK
    assert info.adapter_id == mac and info.ip_addr == "192.0.2.10"
    assert info.gate_way == "192.0.2.1;"


def test_get_ip_info_unknown_mac(role):
    assert Served(role, KvpGetIpInfo(0, "00:15:5D:FF:FF:FF", 0).encode(), 0).status == FAIL
    assert Served(role, KvpGetIpInfo(0, "not a mac", 0).encode(), 0).status == FAIL


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
    done = role.complete(IpApplied(HvStatus.HV_GUID_NOTFOUND, "no such adapter"), 1.0)
    assert status_of(done.reply) == HvStatus.HV_GUID_NOTFOUND
    assert role.state is KvpState.READY
    with pytest.raises(LocalUsageError):
        role.complete(IpApplied(0, ""), 2.0)


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
    res = Served(role, set_ip(**kw).encode(), 0)
    assert res.status == INVAL and status_of(res.reply) == INVAL
    assert role.state is KvpState.READY


def test_dhcp_ignores_addresses_but_still_checks_them():
    cfg = parse_ip_config(set_ip(dhcp_enabled=True, ip_addr="192.0.2.20", sub_net=""))
    assert cfg.dhcp and cfg.addresses == ()
    with pytest.raises(HostValueError, match="ip_addr 'x'"):
        parse_ip_config(set_ip(dhcp_enabled=True, ip_addr="x", sub_net=""))


def test_refusal_log_names_field_and_escaped_value(role):
    res = Served(role, set_ip(dns_addr="fe80::53%x\n    pre-up reboot").encode(), 0)
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
        Served(r, KvpGet(0, "k").encode(), 0)
    r.registered("3.1")
    r.lost()
    assert r.state is KvpState.UNREGISTERED


def test_enumerating_an_item_the_host_sees_cut_is_logged(role):
    role.view.pools[1]["long"] = "x" * 1500
    role.view.pools[1]["ok"] = "y" * 1022
    res = Served(role, KvpEnumerate(1, 0).encode(), 0)
    assert res.status == OK
    (note,) = res.actions
    assert "value is 1500 UTF-16 units, the host sees the first 1022" in note.args[2]
    assert Served(role, KvpEnumerate(1, 1).encode(), 0).actions == []


# -- the role contract: handle() -> Step, complete() -> Step, a table of transitions --


def test_set_asks_for_a_pool_write_and_replies_only_on_its_outcome(role):
    step = role.handle(KvpSet(0, "key", "value").encode(), 1.0)
    assert isinstance(step, Step)
    assert step.reply is None and step.actions == (WritePool(0, "key", "value"),)
    assert role.state is KvpState.WRITING
    assert role.counters.requests == 0, "not answered yet"
    assert role.view.pools[0] == {}, "the role itself writes nothing"
    done = role.complete(PoolDone(), 1.5)
    assert status_of(done.reply) == OK and done.actions == ()
    assert role.state is KvpState.READY and role.last == ("SET", "HV_S_OK", 1.5)


def test_delete_asks_for_a_pool_delete_and_an_absent_key_is_cont(role):
    step = role.handle(KvpDelete(3, "gone").encode(), 0)
    assert step.reply is None and step.actions == (DeletePool(3, "gone"),)
    done = role.complete(PoolDone(found=False), 0)
    assert status_of(done.reply) == CONT and role.state is KvpState.READY


@pytest.mark.parametrize("kind", ["full", "busy", "frozen", "error"])
def test_failed_pool_write_is_e_fail_logged_with_its_detail(role, kind):
    request = KvpSet(4, "k", "v").encode()
    role.handle(request, 0)
    detail = f"KVP pool 4: {kind} (/var/lib/hyperv/.kvp_pool_4)"
    done = role.complete(PoolFailed(detail, kind), 2.0)
    assert len(done.reply) == KVP_MSG_SIZE
    assert status_of(done.reply) == FAIL
    assert done.reply[4:] == request[4:], "the request echoed, only the status set"
    (note,) = done.actions
    assert note.level == 40 and note.message % note.args == f"KVP SET failed: {detail}"
    assert note.fields == {"POOL": "4"}
    assert role.counters.failures == 1 and role.last == ("SET", "HV_E_FAIL", 2.0)
    assert role.state is KvpState.READY


@pytest.mark.parametrize(
    ("message", "event"),
    [(KvpGet(0, "k").encode(), "'GET'"), (KvpSet(0, "k", "v").encode(), "'SET'"),
     (raw_msg(9, 0), "'malformed'"), (raw_msg(100, 0), "'REGISTER'")],
)
def test_a_request_while_a_reply_is_pending_is_misuse_naming_state_and_message(
    role, message, event
):
    role.handle(KvpDelete(0, "k").encode(), 0)
    with pytest.raises(LocalUsageError) as exc:
        role.handle(message, 0)
    assert "WRITING" in str(exc.value) and event in str(exc.value)


def test_outcomes_not_asked_for_are_misuse(role):
    with pytest.raises(LocalUsageError, match=r"'pool written'.*READY"):
        role.complete(PoolDone(), 0)
    role.handle(KvpSet(0, "k", "v").encode(), 0)
    with pytest.raises(LocalUsageError, match=r"'ip applied'.*WRITING"):
        role.complete(IpApplied(0, "done"), 0)
    role.lost()
    with pytest.raises(LocalUsageError, match=r"'pool written'.*UNREGISTERED"):
        role.complete(PoolDone(), 0)


def test_a_lost_channel_forgets_the_pending_write(role):
    role.handle(KvpSet(0, "k", "v").encode(), 0)
    role.lost()
    role.registered("3.1")
    assert Served(role, KvpGet(0, "k").encode(), 0).status == CONT


@pytest.mark.parametrize("request_", [KvpSet(0, "k", "v"), KvpDelete(0, "k")])
def test_an_abandoned_request_frees_the_role_for_the_next(role, request_):
    """The daemon answers a request itself when carrying out its work raised: the
    role must take the next request, keeping its registration."""
    role.handle(request_.encode(), 0)
    role.abandon()
    assert role.state is KvpState.READY and role.version == "3.1"
    assert Served(role, KvpGet(0, "k").encode(), 0).status == CONT
    with pytest.raises(LocalUsageError, match=r"'pool written'.*READY"):
        role.complete(PoolDone(), 0)  # nothing is pending any more


def test_abandon_before_registration_is_misuse(role):
    role.lost()
    with pytest.raises(LocalUsageError, match=r"'abandoned'.*UNREGISTERED"):
        role.abandon()
