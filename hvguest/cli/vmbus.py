"""hvguestctl vmbus: the VMBus devices the host offers (lsvmbus equivalent)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from hvguest.roots import add_root_options, paths_from_args
from hvguest.text import printable, write_line
from hvguest.vmbus.inventory import Channel, Inventory, VmbusDevice, scan


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


def _channel_line(ch: Channel, counters: bool) -> str:
    cpu = ch.counters.get("cpu")
    line = f"\tRel_ID={ch.relid}, target_cpu={cpu if cpu is not None else '?'}"
    if counters:
        shown = " ".join(f"{k}={v}" for k, v in ch.counters.items() if k != "cpu")
        if shown:
            line += f", {printable(shown)}"
    return line


def render(inv: Inventory, verbose: int, out: TextIO) -> None:
    for dev in inv.devices:
        out.write(_device_text(dev, verbose))
    if inv.unreadable:
        write_line(out, f"could not read {len(inv.unreadable)} attribute(s):")
        for item in inv.unreadable:
            write_line(out, f"  {item}")


def _device_text(dev: VmbusDevice, verbose: int) -> str:
    # Every field read from sysfs is escaped; the tabs and line ends are our layout.
    vid = "?" if dev.vmbus_id is None else str(dev.vmbus_id)
    description = printable(dev.description)
    if verbose == 0:
        return f"VMBUS ID {vid:>2}: {description}\n"
    driver = printable(dev.driver or "(no driver)")
    if dev.uio:
        driver += f" ({printable(dev.uio)})"
    lines = [f"VMBUS ID {vid:>2}: Class_ID = {{{printable(dev.class_id)}}} - {description}"]
    lines.append(f"\tDevice_ID = {{{printable(dev.instance)}}}, driver = {driver}")
    if verbose >= 2:
        lines.append(f"\tSysfs path: {printable(dev.path)}")
    lines.extend(_channel_line(ch, verbose >= 2) for ch in dev.channels)
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    paths = paths_from_args(args)
    inv = scan(paths)
    if args.json:
        json.dump(inv.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if inv.present else 1
    if not inv.present:
        write_line(sys.stderr,
                   f"{inv.root} does not exist: not a Hyper-V guest (or hv_vmbus is not loaded)")
        return 1
    render(inv, args.verbose, sys.stdout)
    return 0
