"""Pool 1 under three writers at once: nothing lost, no torn record.

* the host, through the simulated kernel and hvguest-kvpd: SET then GET of its keys;
* ``hvguestctl kvp set`` in a loop (one process calling the CLI entry point thousands
  of times, plus real ``hvguestctl`` processes);
* Debian's cloud-init ``HyperVKvpReportingHandler`` appending events (flock only).

10,000 operations in total, sized to finish well under 90 s. hvguest takes both flock
and the fcntl lock, so it excludes cloud-init as well as hv_kvp_daemon.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from hvguest.sim.client import SimClient
from hvguest.wire.pool import decode_pool

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.system, pytest.mark.slow]

HOST_KEYS = 2000  # SET + GET each: 4000 operations
CLI_LOOP_SETS = 3400
CLI_PROCESS_SETS = 100
CLI_KEYS = 200
CLOUD_INIT_EVENTS = 2500

CLOUD_INIT = """
import sys
from cloudinit.reporting import events
from cloudinit.reporting.handlers import HyperVKvpReportingHandler
path, count = sys.argv[1], int(sys.argv[2])
handler = HyperVKvpReportingHandler(kvp_file_path=path)
for i in range(count):
    handler.publish_event(events.ReportingEvent("start", f"ev{i}", f"event {i}", origin="test"))
    if i % 5 == 4:
        handler.flush()  # small appends, interleaved with the other writers
handler.flush()
"""

CLI_LOOP = """
import sys
from hvguest.cli.main import main
pool_dir, count, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    rc = main(["kvp", "set", f"hvguest.cli.{i % keys}", f"loop {i}", "--pool-dir", pool_dir])
    if rc != 0:
        sys.exit(f"set {i} failed with {rc}")
"""


def test_three_writers_nothing_lost(tmp_path: pytest.TempPathFactory) -> None:
    workdir = str(tmp_path)
    config = os.path.join(workdir, "hvguest.yaml")
    with open(config, "w") as f:
        f.write("kvp:\n  publish_version: false\n")
    command = [sys.executable, "-m", "hvguest.daemons.kvpd", "--config", config]
    with SimClient.start(command, workdir=os.path.join(workdir, "sim")) as sim:
        pool_dir = os.path.join(sim.root, "var/lib/hyperv")
        pool1 = os.path.join(pool_dir, ".kvp_pool_1")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        cloud_init = subprocess.Popen(
            [sys.executable, "-c", CLOUD_INIT, pool1, str(CLOUD_INIT_EVENTS)], env=env
        )
        cli_loop = subprocess.Popen(
            [sys.executable, "-c", CLI_LOOP, pool_dir, str(CLI_LOOP_SETS), str(CLI_KEYS)], env=env
        )
        hvguestctl = os.path.join(os.path.dirname(sys.executable), "hvguestctl")
        cli_errors: list[str] = []

        def cli_processes() -> None:
            for i in range(CLI_PROCESS_SETS):
                r = subprocess.run(
                    [
                        hvguestctl,
                        "kvp",
                        "set",
                        f"hvguest.proc.{i}",
                        f"proc {i}",
                        "--pool-dir",
                        pool_dir,
                    ],
                    capture_output=True,
                    check=False,
                )
                if r.returncode != 0:
                    cli_errors.append(r.stderr.decode())

        procs = threading.Thread(target=cli_processes)
        procs.start()
        host_failures = []
        for i in range(HOST_KEYS):
            status = sim.kvp_set(1, f"host.{i}", f"host value {i}")
            if status != 0:
                host_failures.append(("set", i, status))
        for i in range(HOST_KEYS):
            status, value = sim.kvp_get(1, f"host.{i}")
            if (status, value) != (0, f"host value {i}"):
                host_failures.append(("get", i, status, value))
        procs.join(120)
        assert cloud_init.wait(120) == 0
        assert cli_loop.wait(120) == 0
        assert not cli_errors
        assert not host_failures

        with open(pool1, "rb") as f:
            data = f.read()
        records, rest = decode_pool(data)
        assert rest == 0, "torn trailing record"
        texts = [(r.key_text(), r.value_text()) for r in records]  # every record decodes
        keys = [k for k, _ in texts]
        values = dict(texts)
        assert len(keys) == len(set(keys)), "a key is stored twice"
        assert sum(k.startswith("CLOUD_INIT|") for k in keys) == CLOUD_INIT_EVENTS
        for i in range(HOST_KEYS):
            assert values[f"host.{i}"] == f"host value {i}"
        for k in range(CLI_KEYS):
            last = max(i for i in range(CLI_LOOP_SETS) if i % CLI_KEYS == k)
            assert values[f"hvguest.cli.{k}"] == f"loop {last}"
        for i in range(CLI_PROCESS_SETS):
            assert values[f"hvguest.proc.{i}"] == f"proc {i}"
        assert len(records) == HOST_KEYS + CLI_KEYS + CLI_PROCESS_SETS + CLOUD_INIT_EVENTS
        # what the host sees is the same set of items
        assert len(sim.kvp_enumerate_all(1)) == len(records)
