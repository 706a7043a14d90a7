"""The health items reach the host: hvguest-heartbeatd writes pool 1, hvguest-kvpd
serves it, and the simulated host enumerates it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.system]

FAKE_SYSTEMCTL = """#!/bin/sh
# list-units --state=failed: the failed units named in $FAILED_UNITS
if [ "$1" = list-units ]; then
  for u in $FAILED_UNITS; do echo "$u loaded failed failed test unit"; done
fi
exit 0
"""


@pytest.fixture
def sim(tmp_path: Any) -> Iterator[Any]:
    from hvguest.sim.client import SimClient

    cfg = tmp_path / "kvp.yaml"
    cfg.write_text("kvp:\n  publish_version: false\n")
    cmd = [sys.executable, "-m", "hvguest.daemons.kvpd", "--config", str(cfg)]
    with SimClient.start(cmd, workdir=str(tmp_path / "sim")) as client:
        yield client


def test_health_visible_to_host(sim: Any, tmp_path: Any, builder: Any) -> None:
    paths = builder.build(str(tmp_path / "m"), systemd_pid1=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(FAKE_SYSTEMCTL)
    os.chmod(bindir / "systemctl", 0o755)

    def heartbeat_once(failed: str) -> None:
        r = sim.exec(["env", f"PATH={bindir}:/usr/bin:/bin", f"FAILED_UNITS={failed}",
                      sys.executable, "-m", "hvguest.daemons.heartbeatd", "--once",
                      "--sys-root", paths.sys, "--dev-root", paths.dev, "--proc-root",
                      paths.proc, "--run-dir", paths.run, "--etc-dir", paths.etc])
        assert r.returncode == 0, r.stderr.decode()

    heartbeat_once("")
    items = dict(sim.kvp_enumerate_all(1))
    assert items["hvguest.health"] == "ok"
    assert items["hvguest.health.reason"] == "no failed units"
    heartbeat_once("backup.service")
    items = dict(sim.kvp_enumerate_all(1))
    assert items["hvguest.health"] == "degraded"
    assert items["hvguest.health.reason"] == "1 failed units: backup.service"


def test_status_reads_the_real_kvpd_state(sim: Any, tmp_path: Any, builder: Any) -> None:
    """hvguestctl status inside the sandbox, against hvguest-kvpd's own state file."""
    import json

    import jsonschema

    from hvguest import status

    paths = builder.build(str(tmp_path / "m"))
    assert sim.kvp_set(0, "k", "v") == 0
    r = sim.exec([sys.executable, "-m", "hvguest.cli.main", "status", "kvp", "--json",
                  "--sys-root", paths.sys, "--dev-root", paths.dev])
    doc = json.loads(r.stdout)
    with open(os.path.join(os.path.dirname(status.__file__), "status_schema.json")) as f:
        jsonschema.validate(doc, json.load(f), cls=jsonschema.Draft202012Validator)
    kvp = doc["services"]["kvp"]
    assert kvp["daemon"]["running"] and kvp["daemon"]["source"] in ("pid", "systemd")
    assert kvp["protocol_version"] == "3.1"
    assert isinstance(kvp["details"]["pools"]["0"]["records"], int)
    assert kvp["health"] == "ok" and r.returncode == 0, r.stderr.decode()
