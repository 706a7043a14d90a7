"""Command line and start-up shared by every hvguest daemon."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from hvguest.config import Config, load_config
from hvguest.errors import ConfigError
from hvguest.log import TARGETS, set_level, setup_logging
from hvguest.paths import Paths
from hvguest.roots import add_root_options, paths_from_args

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Paths().config_file

# Exit status of a daemon whose configuration is invalid: EX_CONFIG of sysexits.h.
# Every unit lists it in RestartPreventExitStatus=, so systemd reports a bad file
# once and leaves the unit failed instead of restarting it into the same error.
EXIT_CONFIG = 78


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``, the same answer (COLUMNS, else the
    terminal on stdout, else 80) without importing shutil, which pulls zlib, bz2 and
    lzma (0.5 MB of resident memory) into every daemon for argparse's help width."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, told the width (argparse would import shutil for it)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        # argparse takes two columns off the terminal's width when it measures it.
        super().__init__(prog, indent_increment, max_help_position,
                         terminal_columns() - 2 if width is None else width)


def daemon_arg_parser(
    prog: str, description: str, *, os_etc: bool = False
) -> argparse.ArgumentParser:
    """Options every daemon accepts; a daemon may add its own. ``os_etc``: the
    daemon reads the system's /etc too (--os-etc-dir)."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"configuration file (default: {DEFAULT_CONFIG}, or hvguest.yaml in --etc-dir)",
    )
    add_root_options(p, root_dir=False, os_etc=os_etc)
    p.add_argument("--debug", action="store_true", help="log debug messages")
    p.add_argument(
        "--log-target",
        choices=TARGETS,
        default="auto",
        help="journal under systemd, stderr otherwise (default: auto)",
    )
    return p


def daemon_ident(service: str) -> str:
    """The program name: "kvp" -> "hvguest-kvpd"; "hvguest-kvpd" is kept."""
    return service if service.startswith("hvguest-") else f"hvguest-{service}d"


def start_daemon(service: str, args: argparse.Namespace) -> tuple[Paths, Config]:
    """Set up logging and load the configuration.

    ``service`` is the role ("kvp") or the program name ("hvguest-kvpd"). A bad
    configuration prints one line to stderr (the journal, under systemd) and exits
    with EXIT_CONFIG; a missing default configuration file means defaults.
    """
    ident = daemon_ident(service)
    debug = bool(getattr(args, "debug", False))
    setup_logging(ident, debug=debug, target=getattr(args, "log_target", "auto"))
    paths = paths_from_args(args)
    explicit = getattr(args, "config", None)
    path = explicit or paths.config_file
    try:
        config = load_config(path, missing_ok=explicit is None)
    except ConfigError as exc:
        print(f"{ident}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG) from None
    if not debug:
        set_level(config.log.level)
    log.debug("%s: configuration %s, roots %s", ident, path, paths)
    return paths, config
