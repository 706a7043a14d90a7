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


def build_parser(subcommands: tuple[str, ...] = SUBCOMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hvguestctl",
        description="Inspect and control the hvguest Hyper-V integration services.",
    )
    parser.add_argument("--version", action="version", version=f"hvguestctl {__version__}")
    parser.add_argument("--root-dir", default="/", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in subcommands:
        try:
            module = importlib.import_module(f"hvguest.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hvguest.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def is_thaw_command(argv: list[str]) -> bool:
    """True for "[--root-dir DIR] vss thaw ...", the unit's emergency thaw."""
    words = list(argv)
    while words and words[0].startswith("--root-dir"):
        words = words[1:] if "=" in words[0] else words[2:]
    return words[:2] == ["vss", "thaw"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The emergency thaw may run with filesystems frozen: load nothing else.
    parser = build_parser(("vss",) if is_thaw_command(argv) else SUBCOMMANDS)
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
