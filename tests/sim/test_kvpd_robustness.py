"""Bad input from the kernel side (raw 7432-byte messages) and signals mid-operation.

Every case gets a failure reply with a clear status and a log line; the daemon keeps
serving (the next request works) and the pool files stay intact. The reference daemon
crashes or misbehaves on most of these (users.md (b)).
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from hvguest.sim.client import SimClient, SimError
from hvguest.wire.kvp import KVP_MSG_SIZE, KvpGetIpInfo, KvpSet, decode_kvp_reply
from hvguest.wire.pool import decode_pool

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.system]

HV_S_OK = 0
HV_E_FAIL = 0x80004005
HV_S_CONT = 0x80070103
HV_INVALIDARG = 0x80070057


def kvpd_command(tmpdir: str) -> list[str]:
    path = os.path.join(tmpdir, "hvguest.yaml")
    with open(path, "w") as f:
        f.write("kvp:\n  publish_version: false\n")
    return [sys.executable, "-m", "hvguest.daemons.kvpd", "--config", path]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimClient]:
    workdir = str(tmp_path_factory.mktemp("kvpd-bad"))
    with SimClient.start(kvpd_command(workdir), workdir=os.path.join(workdir, "sim")) as client:
        assert client.kvp_set(0, "keep", "me") == HV_S_OK
        assert client.kvp_set(1, "keep1", "me1") == HV_S_OK
        yield client


def msg(op: int, pool: int, **fields: tuple[int, bytes]) -> bytes:
    buf = bytearray(KVP_MSG_SIZE)
    buf[0], buf[1] = op, pool
    for offset, data in fields.values():
        buf[offset : offset + len(data)] = data
    return bytes(buf)


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


CASES = {
    "pool 5": (msg(3, 5), HV_E_FAIL),
    "pool 7 set": (msg(1, 7, s=(8, u32(2) + u32(2)), k=(16, b"k\0"), v=(528, b"v\0")), HV_E_FAIL),
    "pool 200": (msg(3, 200), HV_E_FAIL),
    "pool 255": (msg(0, 255, s=(8, u32(2)), k=(16, b"k\0")), HV_E_FAIL),
    "index 2^31": (msg(3, 0, i=(4, u32(1 << 31))), HV_S_CONT),
    "index 0xFFFFFFFF": (msg(3, 0, i=(4, u32(0xFFFFFFFF))), HV_S_CONT),
    "key_size 0": (
        msg(1, 0, s=(8, u32(0) + u32(2)), k=(16, b"k\0"), v=(528, b"v\0")),
        HV_INVALIDARG,
    ),
    "key_size 0xFFFFFFFF": (msg(0, 0, s=(8, u32(0xFFFFFFFF)), k=(16, b"k\0")), HV_INVALIDARG),
    "value_size 0xFFFFFFFF": (
        msg(1, 0, s=(8, u32(2) + u32(0xFFFFFFFF)), k=(16, b"k\0"), v=(528, b"v\0")),
        HV_INVALIDARG,
    ),
    "delete key_size 0xFFFFFFFF": (
        msg(2, 0, s=(4, u32(0xFFFFFFFF)), k=(8, b"keep\0")),
        HV_INVALIDARG,
    ),
    "key without NUL": (
        msg(1, 0, s=(8, u32(512) + u32(2)), k=(16, b"x" * 512), v=(528, b"v\0")),
        HV_INVALIDARG,
    ),
    "value without NUL": (
        msg(1, 0, s=(8, u32(2) + u32(2048)), k=(16, b"k\0"), v=(528, b"v" * 2048)),
        HV_INVALIDARG,
    ),
    "invalid UTF-8 key": (
        msg(1, 0, s=(8, u32(3) + u32(2)), k=(16, b"\xff\xfe\0"), v=(528, b"v\0")),
        HV_INVALIDARG,
    ),
    "invalid UTF-8 value": (
        msg(1, 0, s=(8, u32(2) + u32(3)), k=(16, b"k\0"), v=(528, b"\xc3(\0")),
        HV_INVALIDARG,
    ),
    "unknown op 6": (msg(6, 0), HV_E_FAIL),
    "unknown op 99": (msg(99, 0), HV_E_FAIL),
    "short message": (KvpSet(0, "k", "v").encode()[:1000], HV_E_FAIL),
    "long message": (KvpSet(0, "k", "v").encode() + b"\0" * 100, HV_E_FAIL),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_fails_cleanly(sim: SimClient, name: str) -> None:
    data, expected = CASES[name]
    before = [sim.exec(["cat", f"/var/lib/hyperv/.kvp_pool_{n}"]).stdout for n in (0, 1)]
    reply = sim.kvp_raw(data)
    assert len(reply) == KVP_MSG_SIZE
    assert struct.unpack_from("<I", reply)[0] == expected
    assert sim.daemon_alive()
    # still serving, pools untouched
    assert sim.kvp_get(0, "keep") == (HV_S_OK, "me")
    after = [sim.exec(["cat", f"/var/lib/hyperv/.kvp_pool_{n}"]).stdout for n in (0, 1)]
    assert after == before


def test_bad_requests_are_logged(sim: SimClient) -> None:
    sim.kvp_raw(msg(3, 201))
    with open(os.path.join(os.path.dirname(sim.control), "sim.stderr"), errors="replace") as f:
        text = f.read()
    assert "rejected KVP ENUMERATE request: KVP pool is 201, limit 4" in text


def test_lower_case_mac(sim: SimClient) -> None:
    reply = sim.kvp_raw(KvpGetIpInfo(0, "00:15:5d:00:00:01").encode())
    decoded = decode_kvp_reply(4, reply)
    assert decoded.status == HV_S_OK
    assert decoded.ip_info is not None and decoded.ip_info.ip_addr.startswith("192.0.2.10")


def test_sigterm_mid_operation(tmp_path: pytest.TempPathFactory) -> None:
    """SIGTERM while the host keeps writing: exit 0, every record whole and readable.

    Each host request is either answered by the daemon (HV_S_OK) or failed by the
    kernel when the daemon closes the device (HV_E_FAIL); one sent after the close
    stays queued in the kernel until a daemon registers, so the writer gives up on it.
    """
    workdir = str(tmp_path)
    simdir = os.path.join(workdir, "sim")
    with SimClient.start(kvpd_command(workdir), workdir=simdir) as sim:
        statuses: list[int] = []
        writer_client = SimClient(sim.control, timeout=5)

        def writer() -> None:
            i = 0
            while True:
                try:
                    statuses.append(writer_client.kvp_set(0, f"key{i % 50}", f"value {i}" * 20))
                except SimError:
                    return
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.5)
        os.kill(sim.daemon_pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while sim.daemon_alive():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        thread.join(15)
        assert not thread.is_alive()
        writer_client.close()
        data = sim.exec(["cat", "/var/lib/hyperv/.kvp_pool_0"]).stdout
        records, rest = decode_pool(data)
        assert rest == 0
        assert 0 < len(records) <= 50
        for r in records:
            assert r.key.startswith(b"key")
            assert r.value_text().startswith("value ")  # whole, decodable
        assert len(statuses) > 10
        assert set(statuses) <= {HV_S_OK, HV_E_FAIL}
        assert statuses[:-1] == [HV_S_OK] * (len(statuses) - 1)
    with open(os.path.join(simdir, "sim.log")) as f:
        assert "daemon exited with 0" in f.read()


def test_value_size_zero_stores_an_empty_value(sim: SimClient) -> None:
    """value_size 0 is what the kernel sends for a value of unknown type: an empty value."""
    reply = sim.kvp_raw(msg(1, 3, s=(8, u32(6) + u32(0)), k=(16, b"empty\0"), v=(528, b"junk\0")))
    assert struct.unpack_from("<I", reply)[0] == HV_S_OK
    assert sim.kvp_get(3, "empty") == (HV_S_OK, "")
