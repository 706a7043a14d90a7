"""Paths from the command line: the one way daemons and ``hvguestctl`` build ``Paths``.

Every program takes the same root options (``--sys-root``, ``--run-dir``, ...), so
tests and the simulator can point any of them at a private tree. ``hvguestctl``
also takes ``--root-dir`` (every path below one directory).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from hvguest.paths import Paths

# option dest -> Paths field, in the order --help lists them
ROOT_OPTIONS = {
    "dev_root": "dev",
    "sys_root": "sys",
    "proc_root": "proc",
    "pool_dir": "pool_dir",
    "etc_dir": "etc",
    "run_dir": "run",
    "os_etc_dir": "os_etc",
}


def add_root_options(
    parser: argparse.ArgumentParser, *, root_dir: bool = True, os_etc: bool = True
) -> None:
    """The root options; ``root_dir``: also --root-dir; ``os_etc``: also --os-etc-dir
    (the system's /etc, for chrony's configuration)."""
    group = parser.add_argument_group("roots (for tests and the simulator)")
    if root_dir:
        # SUPPRESS: when absent here, hvguestctl's own --root-dir (before the command) stays.
        group.add_argument("--root-dir", metavar="DIR", default=argparse.SUPPRESS,
                           help="read every path below DIR")
    defaults = Paths()
    for dest, fld in ROOT_OPTIONS.items():
        if fld == "os_etc" and not os_etc:
            continue
        group.add_argument("--" + dest.replace("_", "-"), dest=dest, metavar="DIR",
                           help=f"instead of {getattr(defaults, fld)}")


def paths_from_args(args: argparse.Namespace) -> Paths:
    """Paths under ``--root-dir`` (default /), each root overridable; options a
    program does not take keep their defaults."""
    root = getattr(args, "root_dir", None) or "/"
    base = Paths()
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Paths):
        value = getattr(base, f.name)
        if isinstance(value, str):
            values[f.name] = value if root == "/" else os.path.join(root, value.lstrip("/"))
    for dest, fld in ROOT_OPTIONS.items():
        override = getattr(args, dest, None)
        if override:
            values[fld] = os.path.abspath(override)
    return Paths(**values)
