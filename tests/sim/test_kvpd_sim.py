"""hvguest-kvpd behind the simulated kernel and host: the protocol end to end."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from collections.abc import Iterator

import pytest
from kvp_scenarios import pool_round_trip

from hvguest.sim.client import SimClient
from hvguest.wire.pool import decode_pool

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.system]

HV_S_OK = 0
HV_S_CONT = 0x80070103
HV_E_FAIL = 0x80004005
AUTO_KEYS = [
    "FullyQualifiedDomainName",
    "IntegrationServicesVersion",
    "NetworkAddressIPv4",
    "NetworkAddressIPv6",
    "OSBuildNumber",
    "OSName",
    "OSMajorVersion",
    "OSMinorVersion",
    "OSVersion",
    "ProcessorArchitecture",
]


def kvpd_command(tmpdir: str, config: str = "kvp:\n  publish_version: false\n") -> list[str]:
    path = os.path.join(tmpdir, "hvguest.yaml")
    with open(path, "w") as f:
        f.write(config)
    return [sys.executable, "-m", "hvguest.daemons.kvpd", "--config", path]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimClient]:
    workdir = str(tmp_path_factory.mktemp("kvpd"))
    with SimClient.start(kvpd_command(workdir), workdir=os.path.join(workdir, "sim")) as client:
        yield client


def pool_bytes(sim: SimClient, pool: int) -> bytes:
    with open(os.path.join(sim.root, f"var/lib/hyperv/.kvp_pool_{pool}"), "rb") as f:
        return f.read()


@pytest.mark.parametrize("pool", [0, 1, 3, 4])
def test_set_get_enumerate_delete(sim: SimClient, pool: int) -> None:
    # Unlike the reference (empty string), GET delivers the stored value.
    pool_round_trip(sim, pool, get_reply=None)
    data = pool_bytes(sim, pool)
    assert data == b"second".ljust(512, b"\0") + b"2".ljust(2048, b"\0")


def test_pool_files_modes(sim: SimClient) -> None:
    base = os.path.join(sim.root, "var/lib/hyperv")
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o755
    for n in range(5):
        assert stat.S_IMODE(os.stat(os.path.join(base, f".kvp_pool_{n}")).st_mode) == 0o644


def test_upsert_shorter_value_and_integers(sim: SimClient) -> None:
    assert sim.kvp_set(0, "n32", 4294967295, "REG_U32") == HV_S_OK
    assert sim.kvp_set(0, "n64", 2**64 - 1, "REG_U64") == HV_S_OK
    assert sim.kvp_set(0, "up", "long value") == HV_S_OK
    assert sim.kvp_set(0, "up", "short") == HV_S_OK
    items = dict(sim.kvp_enumerate_all(0))
    assert items["n32"] == "4294967295"
    assert items["n64"] == "18446744073709551615"
    assert items["up"] == "short"
    records, rest = decode_pool(pool_bytes(sim, 0))
    assert rest == 0
    raw = pool_bytes(sim, 0)
    i = [r.key for r in records].index(b"up")
    # no stale tail of the longer value on disk (the reference leaves "value")
    assert raw[i * 2560 + 512 : (i + 1) * 2560] == b"short".ljust(2048, b"\0")


def test_full_size_host_items(sim: SimClient) -> None:
    key, value = "k" * 254, "v" * 1022
    assert sim.kvp_set(3, key, value) == HV_S_OK
    assert sim.kvp_get(3, key) == (HV_S_OK, value)
    assert (key, value) in sim.kvp_enumerate_all(3)


def test_auto_pool_is_generated(sim: SimClient) -> None:
    items = sim.kvp_enumerate_all(2)
    assert [k for k, _v in items] == AUTO_KEYS
    values = dict(items)
    assert values["IntegrationServicesVersion"] == "3.1"
    assert values["NetworkAddressIPv4"] == "192.0.2.10"
    assert values["NetworkAddressIPv6"].split(";")[0] == "2001:db8::10"
    assert "getaddrinfo" not in values["FullyQualifiedDomainName"]
    assert values["FullyQualifiedDomainName"]
    assert values["OSBuildNumber"] == os.uname().release
    assert values["OSVersion"] == os.uname().release.split("-")[0]
    assert values["ProcessorArchitecture"] == os.uname().machine
    assert sim.kvp_enumerate(2, 10)[0] == HV_S_CONT
    # GET on pool 2 answers the generated items too
    assert sim.kvp_get(2, "OSName") == (HV_S_OK, values["OSName"])


@pytest.mark.parametrize("mac", ["00:15:5D:00:00:01", "00:15:5d:00:00:01"])
def test_get_ip_info(sim: SimClient, mac: str) -> None:
    status, fields = sim.kvp_get_ip_info(mac)
    assert status == HV_S_OK
    assert fields["adapter_id"] == mac
    assert fields["ip_addr"].split(";")[:2] == ["192.0.2.10", "2001:db8::10"]
    assert fields["sub_net"].split(";")[:2] == ["255.255.255.0", "/64"]
    assert fields["addr_family"] == 3
    assert fields["dhcp_enabled"] == 0
    assert fields["gate_way"].endswith(";")


def test_get_ip_info_unknown_mac(sim: SimClient) -> None:
    assert sim.kvp_get_ip_info("00:15:5D:FF:FF:FF")[0] == HV_E_FAIL


def test_set_ip_info_unknown_adapter(sim: SimClient) -> None:
    status = sim.kvp_set_ip_info(
        "{00000000-0000-0000-0000-000000000000}",
        addr_family=1,
        dhcp_enabled=False,
        ip_addr="192.0.2.20",
        sub_net="255.255.255.0",
        gate_way="192.0.2.1",
        dns_addr="192.0.2.53",
    )
    assert status == 0x80041002  # HV_GUID_NOTFOUND


def test_set_ip_info_invalid_address(sim: SimClient) -> None:
    status = sim.kvp_set_ip_info(
        "{00000000-0000-0000-0000-000000000000}",
        addr_family=1,
        dhcp_enabled=False,
        ip_addr="192.0.2.300",
        sub_net="255.255.255.0",
        gate_way="",
        dns_addr="",
    )
    assert status == 0x80070057  # HV_INVALIDARG


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dns_addr", "fe80::53%x\n    pre-up touch pwned"),
        ("gate_way", "fe80::1%y\n[Match]\nName=*"),
        ("dns_addr", "fe80::53%eth0"),
    ],
)
def test_set_ip_info_zone_id_is_invalidarg_and_writes_nothing(
    sim: SimClient, field: str, value: str
) -> None:
    # An adapter id the guest has not: before any check of the values, the old path
    # answered HV_GUID_NOTFOUND, i.e. it had accepted them as addresses.
    fields = {"gate_way": "192.0.2.1", "dns_addr": "192.0.2.53", field: value}
    status = sim.kvp_set_ip_info(
        "{f8615163-df3e-46c5-913f-f2d2f965ed0e}",
        addr_family=3,
        dhcp_enabled=False,
        ip_addr="192.0.2.20",
        sub_net="255.255.255.0",
        **fields,
    )
    assert status == 0x80070057  # HV_INVALIDARG
    written = []
    for rel in (
        "etc/network/interfaces.d",
        "etc/systemd/network",
        "etc/NetworkManager/system-connections",
        "etc/netplan",
    ):
        directory = os.path.join(sim.root, rel)
        if os.path.isdir(directory):
            written += [n for n in os.listdir(directory) if "hvguest" in n]
    assert written == []
    # The daemon logged the refusal before it replied, with the value escaped.
    with open(os.path.join(os.path.dirname(sim.control), "sim.stderr"), errors="replace") as f:
        log = f.read()
    assert f"SET_IP_INFO refused: {field} {ascii(value)}: character '%'" in log
    assert not [line for line in log.splitlines() if line in ("    pre-up touch pwned", "[Match]")]


def test_state_published(sim: SimClient) -> None:
    import json

    sim.kvp_set(1, "state", "x")
    deadline = time.monotonic() + 5
    while True:
        with open(os.path.join(sim.root, "run/hvguest/kvp.json")) as f:
            doc = json.load(f)
        if doc["details"].get("requests", 0) > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert doc["state"] == "ready"
    assert doc["details"]["protocol_version"] == "3.1"
    assert set(doc["details"]["pools"]) == {"0", "1", "2", "3", "4"}
    assert doc["details"]["requests"] > 0


def test_own_key_republished_after_truncation(tmp_path: pytest.TempPathFactory) -> None:
    workdir = str(tmp_path)
    config = "kvp:\n  publish_version: true\n  republish_interval: 1\n"
    with SimClient.start(
        kvpd_command(workdir, config), workdir=os.path.join(workdir, "sim")
    ) as sim:
        assert dict(sim.kvp_enumerate_all(1)).get("hvguest.version", "").startswith("hvguest ")
        # cloud-init's once-per-boot truncation of pool 1
        with open(os.path.join(sim.root, "var/lib/hyperv/.kvp_pool_1"), "wb"):
            pass
        deadline = time.monotonic() + 10
        while "hvguest.version" not in dict(sim.kvp_enumerate_all(1)):
            assert time.monotonic() < deadline, "hvguest.version was not republished"
            time.sleep(0.3)


def test_sigterm_exits_zero_with_pools_intact(tmp_path: pytest.TempPathFactory) -> None:
    workdir = str(tmp_path)
    simdir = os.path.join(workdir, "sim")
    with SimClient.start(kvpd_command(workdir), workdir=simdir) as sim:
        for i in range(20):
            assert sim.kvp_set(0, f"k{i}", f"v{i}") == HV_S_OK
        before = pool_bytes(sim, 0)
        sim.signal_daemon(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while sim.daemon_alive():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        after = sim.exec(["cat", "/var/lib/hyperv/.kvp_pool_0"]).stdout
        assert after == before
    with open(os.path.join(simdir, "sim.log")) as f:
        assert "daemon exited with 0" in f.read()


def test_undecodable_record_is_skipped_not_fatal(sim: SimClient) -> None:
    """A record another writer left with invalid UTF-8 hides nothing else (the reference
    fails the host's enumeration at that record, ending it)."""
    path = os.path.join(sim.root, "var/lib/hyperv/.kvp_pool_4")
    with open(path, "ab") as f:
        f.write(b"before".ljust(512, b"\0") + b"1".ljust(2048, b"\0"))
        f.write(b"bad\xff".ljust(512, b"\0") + b"x".ljust(2048, b"\0"))
        f.write(b"after".ljust(512, b"\0") + b"2".ljust(2048, b"\0"))
    items = sim.kvp_enumerate_all(4)
    assert items[-2:] == [("before", "1"), ("after", "2")]
    assert not [k for k, _v in items if k.startswith("bad")]
    assert sim.kvp_get(4, "after") == (HV_S_OK, "2")


def test_batch_queues_host_requests_in_order(sim: SimClient) -> None:
    from hvguest.sim.client import SimError
    from hvguest.wire.status import HvStatus

    steps = [
        {"op": "set", "pool": 0, "key": "batch.a", "value": "1"},
        {"op": "set", "pool": 0, "key": "batch.b", "value": "2"},
        {"op": "get", "pool": 0, "key": "batch.b"},
        {"op": "delete", "pool": 0, "key": "batch.a"},
        {"op": "get", "pool": 0, "key": "batch.a"},
        {"op": "enumerate", "pool": 0, "index": 10_000},
    ]
    assert sim.kvp_batch(steps) == [0, 0, 0, 0, HvStatus.HV_S_CONT, HvStatus.HV_S_CONT]
    assert sim.kvp_get(0, "batch.b") == (0, "2")
    # A bad step refuses the whole batch before anything reaches the daemon.
    with pytest.raises(SimError, match="unknown step 'rename'"):
        sim.kvp_batch([{"op": "set", "pool": 0, "key": "batch.c", "value": "3"},
                       {"op": "rename", "pool": 0}])
    assert sim.kvp_get(0, "batch.c")[0] == HvStatus.HV_S_CONT
    sim.kvp_delete(0, "batch.b")
