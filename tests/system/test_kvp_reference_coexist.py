"""hvguestctl next to Debian's hv_kvp_daemon on the same pool file.

On every host SET or DELETE the C daemon re-reads the file under its fcntl lock,
releases the lock, then rewrites the whole file (truncate, write every record, shifted
up after a DELETE) under a second lock. hvguest takes the same fcntl lock (and flock),
so it never tears or misplaces one of the C daemon's records. The reverse cannot be
promised by any other writer: a record appended, or updated in place, between the C
daemon's read and its rewrite is undone by the rewrite (cloud-init's appends too).
hvguest-kvpd keeps read and write under one lock; its own concurrency test requires
that nothing at all is lost.

Three phases, each with hvguestctl writing while the host works the same pool:

1. the host SETs: hvguestctl's new records may fall into the C daemon's window, a few
   (at most 2 %; about 0.25 % is typical) and always whole;
2. the host only reads (ENUMERATE): the C daemon writes nothing, so nothing at all of
   hvguestctl's updates and appends may be lost;
3. the host DELETEs (the C daemon shifts every later record): hvguestctl updates its
   keys in place meanwhile; an offset computed before a shift would put a value into
   another key's record, so every key must still carry a value written for that key.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hvguest.sim.client import SimClient
from hvguest.wire.pool import decode_pool

pytestmark = [
    pytest.mark.root,
    pytest.mark.fuse,
    pytest.mark.reference,
    pytest.mark.system,
    pytest.mark.slow,
]

HOST_KEYS = 400
CLI_KEYS = 400
CLI_NEW_KEYS = 200
LOSS_BOUND = 0.02  # of hvguestctl's writes, in the phases where the host writes too

CLI_LOOP = """
import sys
from hvguest.cli.main import main
pool_dir, first, count, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for i in range(first, first + count):
    if main(["kvp", "set", f"hvguest.cli.{i}", f"cli {i} {tag}", "--pool-dir", pool_dir]) != 0:
        sys.exit(f"set {i} failed")
"""


def _cli(pool_dir: str, first: int, count: int, tag: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CLI_LOOP, pool_dir, str(first), str(count), tag]
    )


def _pool(pool_dir: str) -> dict[str, str]:
    with open(os.path.join(pool_dir, ".kvp_pool_1"), "rb") as f:
        records, rest = decode_pool(f.read())
    assert rest == 0, "a torn record at the end of the pool"
    items = {r.key_text(): r.value_text() for r in records}
    assert len(items) == len(records), "a key stored twice"
    return items


def _cli_values(items: dict[str, str]) -> dict[int, str]:
    out = {}
    for key, value in items.items():
        if key.startswith("hvguest.cli."):
            index = int(key.rsplit(".", 1)[1])
            # a value written for another key would be a misplaced (stale-offset) write
            assert value.startswith(f"cli {index} "), f"{key} holds {value!r}"
            out[index] = value
    return out


def test_hvguestctl_and_the_reference_daemon_share_a_pool(tmp_path: pytest.TempPathFactory) -> None:
    with SimClient.start(["/usr/sbin/hv_kvp_daemon", "-n"], workdir=str(tmp_path)) as sim:
        pool_dir = os.path.join(sim.root, "var/lib/hyperv")

        # 1. host SETs while hvguestctl appends
        cli = _cli(pool_dir, 0, CLI_KEYS, "v1")
        statuses = [sim.kvp_set(1, f"host.{i}", f"host {i}") for i in range(HOST_KEYS)]
        assert cli.wait(120) == 0
        assert set(statuses) == {0}
        items = _pool(pool_dir)
        assert all(items[f"host.{i}"] == f"host {i}" for i in range(HOST_KEYS))
        ours = _cli_values(items)
        assert set(ours.values()) <= {f"cli {i} v1" for i in range(CLI_KEYS)}
        lost = CLI_KEYS - len(ours)
        assert lost <= CLI_KEYS * LOSS_BOUND, f"{lost} of {CLI_KEYS} appends erased"
        assert len(items) == HOST_KEYS + len(ours)
        # the C daemon serves hvguest's records to the host
        first = min(ours)
        assert (f"hvguest.cli.{first}", ours[first]) in sim.kvp_enumerate_all(1)

        # 2. the host only reads while hvguestctl updates every key and appends more
        cli = _cli(pool_dir, 0, CLI_KEYS + CLI_NEW_KEYS, "v2")
        reads = 0
        while cli.poll() is None:
            for index in range(0, HOST_KEYS, 7):
                status, key, value = sim.kvp_enumerate(1, index)
                assert status == 0, f"ENUMERATE {index}: status {status:#x}"
                if key.startswith("host."):
                    assert value == f"host {key[5:]}"
                else:
                    assert value.startswith(f"cli {key.rsplit('.', 1)[1]} "), (key, value)
                reads += 1
        assert cli.wait(120) == 0 and reads > 0
        items = _pool(pool_dir)
        ours = _cli_values(items)
        assert ours == {i: f"cli {i} v2" for i in range(CLI_KEYS + CLI_NEW_KEYS)}, (
            "an update or append was lost while the host only read"
        )

        # 3. host DELETEs (records shift) while hvguestctl updates in place
        cli = _cli(pool_dir, 0, CLI_KEYS + CLI_NEW_KEYS, "v3")
        deleted = [sim.kvp_delete(1, f"host.{i}") for i in range(0, HOST_KEYS, 2)]
        assert cli.wait(120) == 0
        assert set(deleted) == {0}
        items = _pool(pool_dir)
        assert not any(f"host.{i}" in items for i in range(0, HOST_KEYS, 2))
        assert all(items[f"host.{i}"] == f"host {i}" for i in range(1, HOST_KEYS, 2))
        ours = _cli_values(items)
        assert set(ours) == set(range(CLI_KEYS + CLI_NEW_KEYS)), "a key vanished"
        undone = [i for i, v in ours.items() if v != f"cli {i} v3"]
        assert all(ours[i] == f"cli {i} v2" for i in undone)
        assert len(undone) <= len(ours) * LOSS_BOUND, (
            f"{len(undone)} of {len(ours)} updates undone by the C daemon's rewrite"
        )
        assert len(items) == HOST_KEYS // 2 + len(ours)
