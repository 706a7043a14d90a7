"""The demo's closing status screen over a written VM tree and linked state files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from hvguest.paths import Paths
from hvguest.sim import demovm
from hvguest.vmbus.inventory import scan


def test_vm_tree_offers_the_simulated_services(tmp_path: Any) -> None:
    tree = demovm.write_vm_tree(str(tmp_path), ["kvp", "fcopy"])
    paths = Paths(sys=tree.sys, dev=tree.dev)
    inv = scan(paths)
    assert sorted(d.name for d in inv.devices) == ["fcopy", "heartbeat", "kvp", "shutdown"]
    assert all(d.driver == "hv_utils" for d in inv.devices)
    assert os.path.exists(paths.vmbus_device("hv_kvp"))
    assert os.path.exists(paths.vmbus_device("hv_fcopy"))


def test_status_screen_with_a_running_daemon(tmp_path: Any,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # A stand-in for a sandboxed hvguest-kvpd: a live process whose cmdline names it.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "hvguest-kvpd"])
    try:
        state = tmp_path / "kvp.json"
        state.write_text(json.dumps({
            "service": "kvp", "pid": proc.pid, "started": "2026-01-02T03:04:05Z",
            "updated": "2026-01-02T03:04:05Z", "version": "0.1.0", "device": None,
            "state": "ready", "last_op": None, "recent": [], "last_error": None,
            "details": {"protocol_version": "3.1", "pools": {"0": {"records": 1}}}}))
        rc = demovm.main(["--workdir", str(tmp_path / "w"), "--state", f"kvp={state}"])
    finally:
        proc.kill()
        proc.wait()
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("$ hvguestctl status\nhvguest status:  OK")
    lines = {line.split()[0]: line for line in out.splitlines()[3:9]}
    assert "running" in lines["kvp"] and "1 key" in lines["kvp"] and "1 keys" not in lines["kvp"]
    assert "running" in lines["heartbeat"]  # the real hvguest-heartbeatd against the tree
    assert lines["vss"].split()[1] == "off"
