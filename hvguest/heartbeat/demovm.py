"""The closing screen of ``hvguest-sim demo``: ``hvguestctl status`` over the demo VM.

The simulator serves each integration service's device in its own sandbox but
models no VMBus sysfs. This writes the sysfs of a VM offering the simulated
services (plus heartbeat and shutdown, which the kernel answers), links in the
state files the sandboxed daemons publish, runs hvguest-heartbeatd against
that tree, and prints the status summary. Time sync is not simulated, so the
demo VM does not offer it.

    python -m hvguest.heartbeat.demovm --workdir DIR --state kvp=/proc/N/root/run/hvguest/kvp.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from hvguest.cli.status import render_summary
from hvguest.heartbeat.inventory import SERVICE_CLASS
from hvguest.heartbeat.report import collect
from hvguest.paths import Paths

# (VMBus id, instance) of the demo VM's devices; hv_utils drives them all (fcopy: legacy).
DEVICES = {
    "heartbeat": (9, "fd149e91-82e0-4a7d-afa6-2a4166cbd7c0"),
    "shutdown": (10, "b6650ff7-33bc-4840-8048-e0676786f393"),
    "kvp": (11, "242ff919-07db-4180-9c2e-b86cb68c8c55"),
    "vss": (12, "2450ee40-33bf-4fbd-892e-9fb06e9214cf"),
    "fcopy": (13, "eb765408-105f-49b6-b4aa-c123b64d17d4"),
}
NODES = {"kvp": "hv_kvp", "vss": "hv_vss", "fcopy": "hv_fcopy"}


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="ascii") as f:
        f.write(text)


def write_vm_tree(root: str, services: Sequence[str]) -> Paths:
    """sysfs and /dev of a VM whose host offers ``services`` (+ heartbeat, shutdown)."""
    paths = Paths(
        sys=os.path.join(root, "sys"), dev=os.path.join(root, "dev"),
        run=os.path.join(root, "run"), pool_dir=os.path.join(root, "pool"),
        etc=os.path.join(root, "etc"), state=os.path.join(root, "state"),
    )
    drivers = os.path.join(paths.sys, "bus/vmbus/drivers/hv_utils")
    os.makedirs(drivers, exist_ok=True)
    for service in ("heartbeat", "shutdown", *services):
        if service not in DEVICES:
            continue
        relid, instance = DEVICES[service]
        ddir = os.path.join(paths.vmbus_devices, instance)
        _write(os.path.join(ddir, "id"), f"{relid}\n")
        _write(os.path.join(ddir, "state"), "3\n")
        _write(os.path.join(ddir, "class_id"), "{" + SERVICE_CLASS[service] + "}\n")
        _write(os.path.join(ddir, "channel_vp_mapping"), f"{relid}:0\n")
        for name, value in (("cpu", 0), ("interrupts", 1), ("events", 1)):
            _write(os.path.join(ddir, "channels", str(relid), name), f"{value}\n")
        link = os.path.join(ddir, "driver")
        if not os.path.islink(link):
            os.symlink(os.path.relpath(drivers, ddir), link)
        if service in NODES:
            _write(paths.vmbus_device(NODES[service]), "")
    os.makedirs(paths.run, exist_ok=True)
    os.makedirs(paths.pool_dir, exist_ok=True)
    return paths


def _wait_for(path: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hvguest.heartbeat.demovm")
    p.add_argument("--workdir", required=True)
    p.add_argument("--state", action="append", default=[], metavar="SERVICE=PATH",
                   help="a sandboxed daemon's state file")
    args = p.parse_args(argv)
    states = dict(item.split("=", 1) for item in args.state)
    paths = write_vm_tree(os.path.join(args.workdir, "vm"), list(states))
    for service, path in states.items():
        link = os.path.join(paths.run, f"{service}.json")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(path, link)
    heartbeatd = subprocess.Popen(
        [sys.executable, "-m", "hvguest.daemons.heartbeatd", "--sys-root", paths.sys,
         "--dev-root", paths.dev, "--run-dir", paths.run, "--pool-dir", paths.pool_dir,
         "--etc-dir", paths.etc, "--log-target", "stderr"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(os.path.join(paths.run, "heartbeat.json"), 20)
        doc = collect(paths)
        print("$ hvguestctl status")
        render_summary(doc, sys.stdout)
        return int(doc["exit_code"])
    finally:
        heartbeatd.terminate()
        try:
            heartbeatd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            heartbeatd.kill()
            heartbeatd.wait()


if __name__ == "__main__":
    sys.exit(main())
