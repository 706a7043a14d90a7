"""hvguestctl next to Debian's hv_kvp_daemon on the same pool file.

On every host SET the C daemon re-reads the file under its fcntl lock, releases the
lock, then rewrites the whole file (truncate, write every record) under a second
lock. hvguest takes the same fcntl lock (and flock), so it never tears or loses the
C daemon's records. The reverse cannot be promised by any other writer: a record
appended between the C daemon's read and its rewrite is erased by the rewrite
(cloud-init's appends too). hvguest-kvpd keeps read and write under one lock; its
own concurrency test requires that nothing at all is lost.
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

CLI_LOOP = """
import sys
from hvguest.cli.main import main
pool_dir, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    if main(["kvp", "set", f"hvguest.cli.{i}", f"cli {i}", "--pool-dir", pool_dir]) != 0:
        sys.exit(f"set {i} failed")
"""


def test_hvguestctl_keeps_the_reference_daemons_records(tmp_path: pytest.TempPathFactory) -> None:
    with SimClient.start(["/usr/sbin/hv_kvp_daemon", "-n"], workdir=str(tmp_path)) as sim:
        pool_dir = os.path.join(sim.root, "var/lib/hyperv")
        cli = subprocess.Popen([sys.executable, "-c", CLI_LOOP, pool_dir, str(CLI_KEYS)])
        statuses = [sim.kvp_set(1, f"host.{i}", f"host {i}") for i in range(HOST_KEYS)]
        assert cli.wait(120) == 0
        assert set(statuses) == {0}
        with open(os.path.join(pool_dir, ".kvp_pool_1"), "rb") as f:
            records, rest = decode_pool(f.read())
        assert rest == 0
        items = dict((r.key_text(), r.value_text()) for r in records)
        assert len(items) == len(records)  # no key twice
        # hvguestctl never loses or tears one of the C daemon's records...
        assert all(items[f"host.{i}"] == f"host {i}" for i in range(HOST_KEYS))
        # ...and every record it wrote is whole; one the C daemon's read-then-rewrite
        # window erased is missing entirely, never half there.
        cli = {k: v for k, v in items.items() if k.startswith("hvguest.cli.")}
        assert all(v == f"cli {k.rsplit('.', 1)[1]}" for k, v in cli.items())
        assert len(records) == HOST_KEYS + len(cli)
        assert len(cli) >= CLI_KEYS * 0.9, f"{CLI_KEYS - len(cli)} of {CLI_KEYS} erased"
        # and the C daemon serves hvguest's records to the host
        first = min(cli, key=lambda k: int(k.rsplit(".", 1)[1]))
        assert (first, cli[first]) in sim.kvp_enumerate_all(1)
