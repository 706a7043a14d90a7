"""The unmodified reference hv_kvp_daemon behind the simulated kernel and host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kvp_scenarios import pool_round_trip

from hvguest.kvp import autopool
from hvguest.sim.client import SimClient

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.reference, pytest.mark.system]

HV_S_OK = 0
HV_S_CONT = 0x80070103
HV_E_FAIL = 0x80004005
# hvguest's AUTO pool promises hv_kvp_daemon's keys in its order: one list for both.
AUTO_KEYS = list(autopool.AUTO_KEYS)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimClient]:
    workdir = str(tmp_path_factory.mktemp("refkvp"))
    with SimClient.start(["/usr/sbin/hv_kvp_daemon", "-n"], workdir=workdir) as client:
        yield client


@pytest.mark.parametrize("pool", [0, 1, 3, 4])
def test_set_get_enumerate_delete(sim: SimClient, pool: int) -> None:
    # The reference copies value_size (0) bytes of the value: GET succeeds but the
    # host sees an empty string.
    pool_round_trip(sim, pool, get_reply="")
    data = sim.exec(["cat", f"/var/lib/hyperv/.kvp_pool_{pool}"]).stdout
    assert len(data) == 2560 and data.startswith(b"second\0")


def test_upsert_and_integer_values(sim: SimClient) -> None:
    assert sim.kvp_set(0, "n32", 4294967295, "REG_U32") == HV_S_OK
    assert sim.kvp_set(0, "n64", 2**64 - 1, "REG_U64") == HV_S_OK
    assert sim.kvp_set(0, "up", "long value") == HV_S_OK
    assert sim.kvp_set(0, "up", "short") == HV_S_OK
    items = dict(sim.kvp_enumerate_all(0))
    assert items["n32"] == "4294967295"
    assert items["n64"] == "18446744073709551615"
    assert items["up"] == "short"


def test_auto_pool_has_ten_generated_keys(sim: SimClient) -> None:
    items = sim.kvp_enumerate_all(2)
    assert [k for k, _v in items] == AUTO_KEYS
    values = dict(items)
    assert values["IntegrationServicesVersion"] == "3.1"
    assert values["NetworkAddressIPv4"] == "192.0.2.10"
    assert "2001:db8::10" in values["NetworkAddressIPv6"]
    assert values["OSName"] and values["ProcessorArchitecture"]
    assert sim.kvp_enumerate(2, 10)[0] == HV_S_CONT


def test_transcript_records_host_view(sim: SimClient) -> None:
    sim.kvp_set(1, "t", "x")
    tr = sim.transcript()
    assert tr[0]["op"] == "negotiate"
    assert tr[0]["fields"] == {"framework": "3.0", "service": "4.0"}
    last = tr[-1]
    assert last["op"] == "set" and last["status"] == HV_S_OK
    assert last["request"] == {"pool": 1, "key": "t", "value": "x", "value_type": "REG_SZ"}
    assert sim.daemon_alive()


def test_set_and_get_in_the_auto_pool_use_its_file(sim: SimClient) -> None:
    # Pool 2 is generated for ENUMERATE only; SET/GET/DELETE still use .kvp_pool_2.
    assert sim.kvp_set(2, "extra", "value") == HV_S_OK
    assert sim.kvp_get(2, "extra") == (HV_S_OK, "")
    assert [k for k, _v in sim.kvp_enumerate_all(2)] == AUTO_KEYS
    assert sim.kvp_delete(2, "extra") == HV_S_OK


def _raw(op: int, pool: int, index: int = 0, size: int = 7432) -> bytes:
    msg = bytearray(size)
    msg[0], msg[1] = op, pool
    if size >= 8:
        msg[4:8] = index.to_bytes(4, "little")
    return bytes(msg)


@pytest.mark.parametrize(
    ("case", "message", "survives"),
    [
        ("pool 5 exits", _raw(3, 5), False),
        ("pool 200 crashes", _raw(3, 200), False),
        ("index 0x80000000 crashes", _raw(3, 0, 0x80000000), False),
        ("short message forces a re-register", _raw(3, 0, size=100), True),
    ],
)
def test_raw_injection_shows_reference_misbehaviour(
    sim: SimClient, case: str, message: bytes, survives: bool
) -> None:
    # No reply reaches the kernel in any of these cases: the transaction fails.
    assert sim.kvp_raw(message) == b"", case
    assert sim.call("wait_registered", timeout=5) is survives
    assert sim.daemon_alive() is survives
    if not survives:
        sim.restart_daemon()
        assert sim.call("wait_registered", timeout=30)
    assert sim.kvp_set(0, "after", case) == HV_S_OK


def test_unknown_operation_is_answered_ok(sim: SimClient) -> None:
    reply = sim.kvp_raw(_raw(9, 0))
    assert len(reply) == 7432 and reply[:4] == bytes(4)


def test_get_ip_info_matches_the_mac_in_upper_case_only(sim: SimClient) -> None:
    status, info = sim.kvp_get_ip_info("00:15:5D:00:00:01")
    assert status == HV_S_OK
    assert info["ip_addr"].split(";")[:2] == ["192.0.2.10", "2001:db8::10"]
    assert info["sub_net"].split(";")[:2] == ["255.255.255.0", "/64"]
    assert info["addr_family"] == 3
    assert info["gate_way"].endswith(";")  # trailing separator, as documented
    assert sim.kvp_get_ip_info("00:15:5d:00:00:01")[0] == HV_E_FAIL


def test_set_ip_info_unknown_adapter(sim: SimClient) -> None:
    # The sandbox's veth has no VMBus device_id: no adapter GUID can match.
    status = sim.kvp_set_ip_info("{f8615163-df3e-46c5-913f-f2d2f965ed0e}", addr_family=1,
                                 dhcp_enabled=False, ip_addr="10.0.0.2", sub_net="255.0.0.0",
                                 gate_way="10.0.0.1", dns_addr="10.0.0.53")
    assert status == 0x80041002  # HV_GUID_NOTFOUND
