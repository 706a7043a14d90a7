"""What every hvguestctl sub-command module does the same way.

A command with actions (``hvguestctl kvp list``): ``command_group`` makes the
command's parser and its ACTION sub-parsers (the command alone prints its help and
exits 1); each action gets its options, then ``finish_action`` adds the root options
(``--root-dir`` ...) and the function that runs it. ``--json`` and ``--config`` read
the same everywhere, and so does the configuration they name: ``load_cli_config``.

The emergency thaw (``hvguestctl vss thaw``) imports this module and may run with the
filesystem holding the package frozen: nothing beyond argparse, json and sys is
imported at the top (the configuration loader is imported by the function using it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hvguest.roots import add_root_options

if TYPE_CHECKING:
    from hvguest.config import Config
    from hvguest.paths import Paths

Command = Callable[[argparse.Namespace], int]


def command_group(sub: Any, name: str, help: str, description: str, **defaults: Any) -> Any:
    """``hvguestctl NAME ACTION ...``: the sub-parsers of NAME's actions, whose name
    lands in ``args.<name>_command``. NAME without an action runs ``func`` given in
    ``defaults`` (with the other defaults), or prints its help and exits 1."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description)
    dest = name.replace("-", "_") + "_command"
    actions = parser.add_subparsers(dest=dest, metavar="ACTION")

    def show_help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 1

    parser.set_defaults(**{"func": show_help, **defaults})
    return actions



def finish_action(parser: argparse.ArgumentParser, func: Command) -> None:
    """The root options (last, after the action's own) and what runs the action."""
    add_root_options(parser)
    parser.set_defaults(func=func)


def add_json_option(parser: argparse.ArgumentParser, help: str = "machine-readable output") -> None:
    parser.add_argument("--json", action="store_true", help=help)


def add_config_option(parser: argparse.ArgumentParser, what: str = "") -> None:
    """``--config PATH``; ``what`` says which settings the command reads from it."""
    text = f"configuration file ({what})" if what else "configuration file"
    parser.add_argument("--config", metavar="PATH", help=text)


def load_cli_config(args: argparse.Namespace, paths: Paths) -> Config:
    """The file ``--config`` names (which must exist), else the machine's own (absent:
    the defaults). Raises ConfigError naming the file and line of a problem."""
    from hvguest.config import load_config  # not on the thaw's path

    explicit = getattr(args, "config", None)
    return load_config(explicit or paths.config_file, missing_ok=explicit is None)


def print_json(doc: Any) -> None:
    """``--json`` output: the document exact (not escaped), indented, one final newline."""
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
