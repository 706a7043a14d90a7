"""hvguestctl vmbus: the VMBus devices the host offers (lsvmbus equivalent)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from hvguest.heartbeat.inventory import Inventory, VmbusDevice, scan
from hvguest.heartbeat.roots import add_root_options, paths_from_cli


def register(sub: Any) -> None:
    p = sub.add_parser(
        "vmbus",
        help="list VMBus devices (like lsvmbus)",
        description="List the VMBus devices the host offers: class, instance, driver, channels.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: class id, driver and channels; -vv: channel counters and sysfs path")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_root_options(p)
    p.set_defaults(func=run)


def _channel_line(ch: Any, counters: bool) -> str:
    cpu = ch.counters.get("cpu")
    line = f"\tRel_ID={ch.relid}, target_cpu={cpu if cpu is not None else '?'}"
    if counters:
        shown = " ".join(f"{k}={v}" for k, v in ch.counters.items() if k != "cpu")
        if shown:
            line += f", {shown}"
    return line


def render(inv: Inventory, verbose: int, out: TextIO) -> None:
    for dev in inv.devices:
        out.write(_device_text(dev, verbose))
    if inv.unreadable:
        out.write(f"could not read {len(inv.unreadable)} attribute(s):\n")
        for item in inv.unreadable:
            out.write(f"  {item}\n")


def _device_text(dev: VmbusDevice, verbose: int) -> str:
    vid = "?" if dev.vmbus_id is None else str(dev.vmbus_id)
    if verbose == 0:
        return f"VMBUS ID {vid:>2}: {dev.description}\n"
    driver = dev.driver or "(no driver)"
    if dev.uio:
        driver += f" ({dev.uio})"
    lines = [f"VMBUS ID {vid:>2}: Class_ID = {{{dev.class_id}}} - {dev.description}"]
    lines.append(f"\tDevice_ID = {{{dev.instance}}}, driver = {driver}")
    if verbose >= 2:
        lines.append(f"\tSysfs path: {dev.path}")
    lines.extend(_channel_line(ch, verbose >= 2) for ch in dev.channels)
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    paths = paths_from_cli(args)
    inv = scan(paths)
    if args.json:
        json.dump(inv.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if inv.present else 1
    if not inv.present:
        print(f"{inv.root} does not exist: not a Hyper-V guest (or hv_vmbus is not loaded)",
              file=sys.stderr)
        return 1
    render(inv, args.verbose, sys.stdout)
    return 0
