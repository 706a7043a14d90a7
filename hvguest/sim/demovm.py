"""The closing screen of ``hvguest-sim demo``: ``hvguestctl status`` over the demo VM.

The simulator serves each integration service's device in its own sandbox but
models no VMBus sysfs. This writes the sysfs of a VM offering the simulated
services (plus heartbeat and shutdown, which the kernel answers), links in the
state files the sandboxed daemons publish, runs hvguest-heartbeatd against
that tree, and shows what ``hvguestctl status`` says of it. Time sync is not
simulated, so the demo VM does not offer it.

Like the rest of the simulator it imports no daemon or CLI code: hvguest-heartbeatd
and hvguestctl run as programs, as on a guest.

    python -m hvguest.sim.demovm --workdir DIR --state kvp=/proc/N/root/run/hvguest/kvp.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

# (VMBus id, instance, class id) of the demo VM's devices; hv_utils drives them all
# (fcopy: legacy). The class ids are the host's.
DEVICES = {
    "heartbeat": (9, "fd149e91-82e0-4a7d-afa6-2a4166cbd7c0",
                  "57164f39-9115-4e78-ab55-382f3bd5422d"),
    "shutdown": (10, "b6650ff7-33bc-4840-8048-e0676786f393",
                 "0e0b6031-5213-4934-818b-38d90ced39db"),
    "kvp": (11, "242ff919-07db-4180-9c2e-b86cb68c8c55", "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"),
    "vss": (12, "2450ee40-33bf-4fbd-892e-9fb06e9214cf", "35fa2e29-ea23-4236-96ae-3a6ebacba440"),
    "fcopy": (13, "eb765408-105f-49b6-b4aa-c123b64d17d4",
              "34d14be3-dee4-41c8-9ae7-6b174977c192"),
}
NODES = {"kvp": "hv_kvp", "vss": "hv_vss", "fcopy": "hv_fcopy"}


@dataclass(frozen=True)
class VmTree:
    """The roots of the demo VM, as hvguest's programs take them on the command line."""

    sys: str
    dev: str
    run: str
    pool_dir: str
    etc: str

    @property
    def vmbus_devices(self) -> str:
        return os.path.join(self.sys, "bus", "vmbus", "devices")

    def vmbus_device(self, name: str) -> str:
        return os.path.join(self.dev, "vmbus", name)

    def root_options(self) -> list[str]:
        return ["--sys-root", self.sys, "--dev-root", self.dev, "--run-dir", self.run,
                "--pool-dir", self.pool_dir, "--etc-dir", self.etc]


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="ascii") as f:
        f.write(text)


def write_vm_tree(root: str, services: Sequence[str]) -> VmTree:
    """sysfs and /dev of a VM whose host offers ``services`` (+ heartbeat, shutdown)."""
    paths = VmTree(
        sys=os.path.join(root, "sys"), dev=os.path.join(root, "dev"),
        run=os.path.join(root, "run"), pool_dir=os.path.join(root, "pool"),
        etc=os.path.join(root, "etc"),
    )
    drivers = os.path.join(paths.sys, "bus/vmbus/drivers/hv_utils")
    os.makedirs(drivers, exist_ok=True)
    for service in ("heartbeat", "shutdown", *services):
        if service not in DEVICES:
            continue
        relid, instance, class_id = DEVICES[service]
        ddir = os.path.join(paths.vmbus_devices, instance)
        _write(os.path.join(ddir, "id"), f"{relid}\n")
        _write(os.path.join(ddir, "state"), "3\n")
        _write(os.path.join(ddir, "class_id"), "{" + class_id + "}\n")
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
    p = argparse.ArgumentParser(prog="python -m hvguest.sim.demovm")
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
        [sys.executable, "-m", "hvguest.daemons.heartbeatd", *paths.root_options(),
         "--log-target", "stderr"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(os.path.join(paths.run, "heartbeat.json"), 20)
        status = subprocess.run(
            [sys.executable, "-m", "hvguest.cli.main", "status", *paths.root_options()],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
        )
        print("$ hvguestctl status")
        sys.stdout.write(status.stdout)
        sys.stderr.write(status.stderr)
        return status.returncode
    finally:
        heartbeatd.terminate()
        try:
            heartbeatd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            heartbeatd.kill()
            heartbeatd.wait()


if __name__ == "__main__":
    sys.exit(main())
