"""hvguestctl next to Debian's hv_kvp_daemon on the same pool file.

The C daemon rewrites the whole file (truncate, then write every record) under an
fcntl write lock on every host SET; hvguest takes the same fcntl lock (and flock), so
neither loses the other's records.
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


def test_hvguestctl_and_hv_kvp_daemon_lose_nothing(tmp_path: pytest.TempPathFactory) -> None:
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
        assert len(records) == HOST_KEYS + CLI_KEYS
        assert all(items[f"host.{i}"] == f"host {i}" for i in range(HOST_KEYS))
        assert all(items[f"hvguest.cli.{i}"] == f"cli {i}" for i in range(CLI_KEYS))
        # and the C daemon serves hvguest's records to the host
        assert ("hvguest.cli.0", "cli 0") in sim.kvp_enumerate_all(1)
