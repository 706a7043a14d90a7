"""Paths for hvguestctl sub-commands: ``--root-dir`` plus per-root overrides.

The daemons take ``--sys-root``, ``--run-dir``, ...; the status commands take
the same options so they can read a simulator's private tree.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from hvguest.paths import Paths

# option dest -> Paths field
ROOT_OPTIONS = {
    "sys_root": "sys",
    "dev_root": "dev",
    "proc_root": "proc",
    "pool_dir": "pool_dir",
    "etc_dir": "etc",
    "run_dir": "run",
    "os_etc_dir": "os_etc",
}


def add_root_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("roots (for tests and the simulator)")
    # SUPPRESS: when absent here, hvguestctl's own --root-dir (before the command) stays.
    group.add_argument("--root-dir", metavar="DIR", default=argparse.SUPPRESS,
                       help="read every path below DIR")
    for dest, fld in ROOT_OPTIONS.items():
        default = getattr(Paths(), fld)
        group.add_argument(
            "--" + dest.replace("_", "-"), dest=dest, metavar="DIR", help=f"instead of {default}"
        )


def paths_from_cli(args: argparse.Namespace) -> Paths:
    """Paths under ``--root-dir`` (default /), each root overridable."""
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
