"""Writers killed with SIGKILL mid-stream leave whole records only.

A child process sets (appends, then rewrites in place) keys as fast as it can and is
killed at an arbitrary moment, again and again; after each kill every record must be
whole and decodable, and the values one of those the child wrote.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from hvguest.paths import Paths
from hvguest.pool import PoolRegistry

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()

pytestmark = [pytest.mark.system]

WRITER = """
import sys
from hvguest.paths import Paths
from hvguest.pool import PoolRegistry
pf = PoolRegistry().open(Paths(pool_dir=sys.argv[1]), 1)
round_ = int(sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    pf.set(f"key{i % 300}", f"round {round_} write {i} " + "x" * (i % 900))
    if i % 7 == 0:
        pf.delete(f"key{(i * 13) % 300}")
    i += 1
"""


def test_sigkill_never_leaves_a_torn_record(tmp_path):
    pool_dir = str(tmp_path)
    rng = random.Random(1234)
    try:
        for round_ in range(15):
            child = subprocess.Popen(
                [sys.executable, "-c", WRITER, pool_dir, str(round_)], stdout=subprocess.PIPE
            )
            assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.01, 0.2))
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()
            pf = POOLS.open(Paths(pool_dir=pool_dir), 1)
            records = pf.records()
            assert os.path.getsize(pf.path) % 2560 == 0  # trailing partial record cut
            for record in records:
                key, value = record.key_text(), record.value_text()
                assert key.startswith("key")
                assert value.startswith("round ") and " write " in value
                n = int(value.split()[3])
                assert value == f"round {value.split()[1]} write {n} " + "x" * (n % 900)
            POOLS.close_all()
    finally:
        POOLS.close_all()
