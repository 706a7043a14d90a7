"""hvguestctl: one command-line entry point, one sub-command module per topic.

Each module in ``SUBCOMMANDS`` exposes ``register(subparsers)`` which adds its
parser(s) and sets ``func(args) -> int`` as the default. Exit codes: 0 ok, 1 error,
2 degraded.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hvguest import __version__
from hvguest.errors import HvGuestError

SUBCOMMANDS = ("status", "vmbus", "kvp", "vss", "fcopy", "timesync")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hvguestctl",
        description="Inspect and control the hvguest Hyper-V integration services.",
    )
    parser.add_argument("--version", action="version", version=f"hvguestctl {__version__}")
    parser.add_argument("--root-dir", default="/", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"hvguest.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hvguest.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args))
    except HvGuestError as exc:
        print(f"hvguestctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
