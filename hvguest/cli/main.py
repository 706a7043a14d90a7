"""hvguestctl: one command-line entry point, one sub-command module per topic.

``command_modules()`` names every sub-command module; each exposes
``register(subparsers)`` which adds its parser(s) and sets ``func(args) -> int`` as
the default. Exit codes: 0 ok, 1 error,
2 degraded, 141 the reader of stdout went away (``hvguestctl kvp list | head``: quiet,
the status a shell shows for a command ended by SIGPIPE).

Text views print strings from the host and other processes only through
``hvguest.text`` (``say``, ``write_line``, ``printable``), which escapes control and
line-breaking characters; ``--json`` output is left exact.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from hvguest import __version__
from hvguest.errors import HvGuestError
from hvguest.text import write_line

EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE


class CommandModule(Protocol):
    def register(self, sub: Any) -> None: ...


def command_modules(*, thaw_only: bool = False) -> tuple[CommandModule, ...]:
    """Every sub-command module, in the order ``--help`` lists them.

    Imported here rather than at the top: the emergency thaw may run with the
    filesystem holding this package frozen, so it loads its own module only.
    """
    if thaw_only:
        from hvguest.cli import vss as thaw

        return (thaw,)
    from hvguest.cli import direct, fcopy, kvp, status, timesync, vmbus, vss

    return (status, vmbus, kvp, vss, fcopy, timesync, direct)


def build_parser(modules: Sequence[CommandModule] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hvguestctl",
        description="Inspect and control the hvguest Hyper-V integration services.",
    )
    parser.add_argument("--version", action="version", version=f"hvguestctl {__version__}")
    parser.add_argument("--root-dir", default="/", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules() if modules is None else modules:
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
    parser = build_parser(command_modules(thaw_only=is_thaw_command(argv)))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        code = int(args.func(args))
        # Flush here, not at exit: a reader that went away must surface as
        # BrokenPipeError below, not as a message from the interpreter's shutdown.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except HvGuestError as exc:
        write_line(sys.stderr, f"hvguestctl: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush of what is
    still buffered for the closed pipe fails silently instead of printing a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # stdout is not a real file (tests capture it): nothing is flushed at exit


if __name__ == "__main__":
    sys.exit(main())
