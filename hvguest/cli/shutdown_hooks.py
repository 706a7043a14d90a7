"""hvguestctl shutdown-hooks {list,run}: pre-shutdown hooks in /etc/hvguest/shutdown.d.

``run`` is what hvguest-shutdown-hooks.service calls (ExecStop) early in an
orderly shutdown. Exit 0 when every usable hook succeeded (or there are none),
2 when a hook failed, timed out or was skipped: the shutdown goes on either way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hvguest.cli import common
from hvguest.cli.heartbeat_config import settings_for
from hvguest.cli.privilege import require_root
from hvguest.proc import systemd_running
from hvguest.roots import paths_from_args
from hvguest.shutdown.hooks import detect_action, list_hooks, run_hooks, save_results
from hvguest.state import utc_now
from hvguest.text import say

ACTIONS = ("auto", "poweroff", "reboot", "halt", "kexec", "test")


HELP = "list or run the pre-shutdown hooks in /etc/hvguest/shutdown.d"
DESCRIPTION = (
    "Hooks run in name order, each within its time budget; only files owned "
    "by root, executable and not writable by group or others are run."
)


def register(sub: Any) -> None:
    hsub = common.command_group(sub, "shutdown-hooks", HELP, DESCRIPTION)
    lp = hsub.add_parser("list", help="show the hooks and whether each will run")
    common.finish_action(lp, run_list)
    rp = hsub.add_parser("run", help="run the hooks now (called by the shutdown unit)")
    rp.add_argument("--action", choices=ACTIONS, default="auto",
                    help="passed to each hook as $1 and HVGUEST_SHUTDOWN_ACTION; auto: from "
                    "systemd's queued target (reboot, poweroff, ...), else poweroff")
    common.add_config_option(rp, "hook budgets")
    common.finish_action(rp, run_run)


def run_list(args: argparse.Namespace) -> int:
    paths = paths_from_args(args)
    hooks = list_hooks(paths)
    if not hooks:
        say("no pre-shutdown hooks")
        return 0
    for hook in hooks:
        say(f"{hook.name:<30} {'runs' if hook.usable else 'SKIPPED: ' + hook.problem}")
    return 0 if all(h.usable for h in hooks) else 2


def run_run(args: argparse.Namespace) -> int:
    # Root's hooks run with root's privileges or not at all: as another user they
    # would half-run (and a hook's own checks could be fooled by the caller).
    require_root("shutdown-hooks run")
    paths = paths_from_args(args)
    settings = settings_for(args, paths.etc)
    action = args.action
    if action == "auto":
        action = detect_action() if systemd_running(paths) else "poweroff"
    results = run_hooks(
        paths,
        action=action,
        hook_timeout=settings.shutdown_hook_timeout,
        total_timeout=settings.shutdown_total_timeout,
    )
    try:
        save_results(paths, action, results, utc_now())
    except OSError as exc:
        say(f"hvguestctl: cannot record the results in {paths.run}: {exc}", file=sys.stderr)
    for r in results:
        rc = f" (exit {r.returncode})" if r.returncode not in (None, 0) else ""
        say(f"{r.hook:<30} {r.result}{rc} {r.seconds:.1f}s {r.detail}".rstrip())
    return 0 if all(r.result == "ok" for r in results) else 2
