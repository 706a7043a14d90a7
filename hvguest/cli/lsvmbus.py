"""lsvmbus: the kernel's tools/hv/lsvmbus (Fedora's hyperv-tools), same options and
output, built on the inventory behind ``hvguestctl vmbus``.

Scripts and Microsoft's validation suite parse this output, so it follows the
original to the character:

* no option: ``VMBUS ID <id>: <description>`` per device, by VMBus id;
* ``-v``: ``VMBUS ID <id>: Class_ID = {<class>} - <description>``, then one
  ``\\tRel_ID=<relid>, target_cpu=<cpu>`` line per channel, then an empty line;
* ``-vv`` (or more): also ``\\tDevice_ID = {<instance>}`` and ``\\tSysfs path: <dir>``
  before the channels.

Descriptions are the original's table (a class it does not know is "Unknown"). Every
value read from sysfs is escaped before it reaches the terminal. Without VMBus it
prints "<dir> doesn't exist: exiting..." and exits 255, as the original does.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from hvguest.paths import Paths
from hvguest.text import printable
from hvguest.vmbus.inventory import Inventory, VmbusDevice, scan

# Classes of the inventory's table that the original does not name.
_NOT_IN_ORIGINAL = frozenset({"imc"})
EXIT_NO_VMBUS = 255  # the original's exit(-1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lsvmbus", usage="%(prog)s [options]",
                                description="List the Hyper-V VMBus devices.")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="print verbose messages. Try -vv, -vvv for more verbose messages")
    # Not in the original: a sysfs root for tests and the simulator.
    p.add_argument("--sys-root", metavar="DIR", default=None, help=argparse.SUPPRESS)
    return p


def description(dev: VmbusDevice) -> str:
    cls = dev.cls
    if cls is None or cls.name in _NOT_IN_ORIGINAL:
        return "Unknown"
    return cls.description


def _channels(dev: VmbusDevice) -> list[str]:
    lines = []
    for ch in dev.channels:  # sorted by relid, as the original sorts them
        cpu = ch.counters.get("cpu")
        lines.append(f"\tRel_ID={ch.relid}, target_cpu={'' if cpu is None else cpu}\n")
    return lines


def device_text(dev: VmbusDevice, verbose: int) -> str:
    vid = "" if dev.vmbus_id is None else str(dev.vmbus_id)
    desc = description(dev)
    if verbose == 0:
        return f"VMBUS ID {vid:>2}: {desc}\n"
    head = f"VMBUS ID {vid:>2}: Class_ID = {{{printable(dev.class_id)}}} - {desc}\n"
    if verbose >= 2:
        head += f"\tDevice_ID = {{{printable(dev.instance)}}}\n"
        head += f"\tSysfs path: {printable(dev.path)}\n"
    # The original ends its text with the channel lines (or nothing), then print()
    # adds a line end: an empty line after every device.
    return head + "".join(_channels(dev)) + "\n"


def render(inv: Inventory, verbose: int, out: TextIO) -> None:
    for dev in inv.devices:
        out.write(device_text(dev, verbose))


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    paths = Paths() if args.sys_root is None else Paths(sys=os.path.abspath(args.sys_root))
    inv = scan(paths)
    if not inv.present:
        out.write(f"{printable(inv.root)} doesn't exist: exiting...\n")
        return EXIT_NO_VMBUS
    render(inv, args.verbose, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
