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

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Paths().config_file

# Exit status of a daemon whose configuration is invalid: EX_CONFIG of sysexits.h.
# Every unit lists it in RestartPreventExitStatus=, so systemd reports a bad file
# once and leaves the unit failed instead of restarting it into the same error.
EXIT_CONFIG = 78


def daemon_arg_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Options every daemon accepts; a daemon may add its own."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"configuration file (default: {DEFAULT_CONFIG}, or hvguest.yaml in --etc-dir)",
    )
    roots = p.add_argument_group("roots (for tests and the simulator)")
    roots.add_argument("--dev-root", metavar="DIR", help="instead of /dev")
    roots.add_argument("--sys-root", metavar="DIR", help="instead of /sys")
    roots.add_argument("--proc-root", metavar="DIR", help="instead of /proc")
    roots.add_argument("--pool-dir", metavar="DIR", help="instead of /var/lib/hyperv")
    roots.add_argument("--etc-dir", metavar="DIR", help="instead of /etc/hvguest")
    roots.add_argument("--run-dir", metavar="DIR", help="instead of /run/hvguest")
    p.add_argument("--debug", action="store_true", help="log debug messages")
    p.add_argument(
        "--log-target",
        choices=TARGETS,
        default="auto",
        help="journal under systemd, stderr otherwise (default: auto)",
    )
    return p


def paths_from_args(args: argparse.Namespace) -> Paths:
    overrides = {
        "dev": getattr(args, "dev_root", None),
        "sys": getattr(args, "sys_root", None),
        "proc": getattr(args, "proc_root", None),
        "pool_dir": getattr(args, "pool_dir", None),
        "etc": getattr(args, "etc_dir", None),
        "run": getattr(args, "run_dir", None),
    }
    return Paths(**{k: os.path.abspath(v) for k, v in overrides.items() if v})


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
