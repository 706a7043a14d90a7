"""hvguestctl vss: status of live backups, emergency thaw, and the freeze plan.

The emergency thaw may run with the filesystem holding this package frozen: this
module imports at the top only what the thaw needs; "plan" imports the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import fcntl
import os
import sys
from typing import Any

from hvguest.cli import common
from hvguest.errors import HvGuestError
from hvguest.paths import Paths
from hvguest.roots import paths_from_args
from hvguest.state import pid_alive, read_state
from hvguest.text import say
from hvguest.vss.freeze import FITHAW
from hvguest.vss.mounts import read_mountinfo
from hvguest.vss.record import clear_record, read_record, record_path

HELP = "live backups: freeze status, emergency thaw, freeze plan"
DESCRIPTION = "Inspect and control hvguest-vssd's filesystem freezes."


def register(sub: Any) -> None:
    vsub = common.command_group(sub, "vss", HELP, DESCRIPTION)

    s = vsub.add_parser("status", help="frozen now? results of the last freeze, per mount")
    common.add_json_option(s)
    common.finish_action(s, cmd_status)

    t = vsub.add_parser(
        "thaw",
        help="emergency thaw of the filesystems hvguest froze",
        description=(
            "Thaw the filesystems recorded as frozen by hvguest-vssd (never others). "
            "Use it if writes hang after a backup; the unit runs it after the daemon stops."
        ),
    )
    t.add_argument(
        "--if-frozen",
        action="store_true",
        help="say nothing and exit 0 when nothing is recorded as frozen",
    )
    common.finish_action(t, cmd_thaw)

    pl = vsub.add_parser(
        "plan", help="which mounts a freeze would cover, in which order, and why not the others"
    )
    common.add_json_option(pl)
    common.add_config_option(pl)
    pl.add_argument("--lib-dir", metavar="DIR", help="instead of /usr/lib/hvguest")
    common.finish_action(pl, cmd_plan)


def _paths(args: argparse.Namespace) -> Paths:
    paths = paths_from_args(args)
    lib = getattr(args, "lib_dir", None)
    if lib:
        paths = dataclasses.replace(paths, lib=os.path.abspath(lib))
    return paths


# -- status ---------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    paths = _paths(args)
    doc = read_state(paths, "vss")
    record = read_record(paths)
    if args.json:
        common.print_json({"state": doc, "freeze_record": record})
    if doc is None:
        if not args.json:
            say("hvguest-vssd has not published a state (not running, or not started yet)")
        if record is not None:
            if not args.json:
                _print_record_warning(record)
            return 2
        return 1
    details = doc.get("details") or {}
    last = details.get("last_freeze")
    daemon_alive = pid_alive(paths, doc.get("pid")) and doc.get("state") != "stopped"
    degraded = bool(record is not None and not pid_alive(paths, record.get("pid")))
    degraded = degraded or bool(last and not last.get("ok"))
    degraded = degraded or bool(last and last.get("thaw") and not last["thaw"].get("ok"))
    guard = details.get("guard") or {}
    # No guard, no FREEZE: backups fail until it runs again.
    degraded = degraded or bool(daemon_alive and guard.get("state") in ("failed", "died"))
    if args.json:
        return 2 if degraded else 0
    say(
        f"daemon: {doc.get('state')} (pid {doc.get('pid')}"
        f"{'' if daemon_alive else ', not running'}), updated {doc.get('updated')}"
    )
    if record is not None:
        mounts = ", ".join(m.get("mount_point", "?") for m in record.get("mounts", []))
        say(f"frozen now: yes, since {record.get('started')}: {mounts}")
        if not pid_alive(paths, record.get("pid")):
            _print_record_warning(record)
    else:
        say("frozen now: no")
    guard_note = f", {guard['reason']}" if guard.get("reason") else ""
    say(
        f"auto-thaw bound: {details.get('auto_thaw')} s;"
        f" thaw guard: {guard.get('state', '?')} (pid {details.get('guard_pid') or 'none'}"
        f"{guard_note})"
    )
    if not last:
        say("last freeze: none since the daemon started")
    else:
        say(
            f"last freeze: {last.get('time')}: {'ok' if last.get('ok') else 'FAILED'}"
            f" in {last.get('freeze_ms')} ms — {last.get('reason')}"
        )
        thaw = last.get("thaw")
        if thaw:
            say(
                f"  thaw ({thaw.get('why')}) at {thaw.get('time')}:"
                f" {'ok' if thaw.get('ok') else 'FAILED'} — {thaw.get('reason')}"
            )
        for m in last.get("mounts", []):
            timing = ""
            if m.get("freeze_ms") is not None:
                timing = f" freeze {m['freeze_ms']:.1f} ms"
            if m.get("thaw_ms") is not None:
                timing += f" thaw {m['thaw_ms']:.1f} ms"
            note = f" — {m['message']}" if m.get("message") else ""
            say(
                f"  {m.get('state', '?'):<11} {m.get('mount_point')} ({m.get('fstype')})"
                f"{timing}{note}"
            )
        for h in last.get("hooks", []):
            res = "ok" if not h.get("error") else h["error"]
            say(f"  hook {h.get('hook')} {h.get('argument')}: {res} ({h.get('seconds')} s)")
    err = doc.get("last_error")
    if err:
        say(f"last error: {err.get('time')}: {err.get('message')}")
    return 2 if degraded else 0


def _print_record_warning(record: dict[str, Any]) -> None:
    say(
        f"WARNING: hvguest-vssd (pid {record.get('pid')}) died during a freeze started"
        f" {record.get('started')}; if writes hang, run 'hvguestctl vss thaw'"
    )


# -- thaw -------------------------------------------------------------------------------


def cmd_thaw(args: argparse.Namespace) -> int:
    from hvguest.cli.privilege import require_root  # here: the thaw path imports little

    require_root("vss thaw")  # FITHAW needs CAP_SYS_ADMIN; the record is root's
    paths = _paths(args)
    record = read_record(paths)
    if record is None:
        if not args.if_frozen:
            say(f"nothing recorded as frozen by hvguest ({record_path(paths)} absent)")
        return 0
    alive = pid_alive(paths, record.get("pid"))
    if alive and not args.if_frozen:
        say(
            f"note: hvguest-vssd (pid {record.get('pid')}) is running and holds this freeze;"
            " thawing anyway",
            file=sys.stderr,
        )
    try:
        mounts = {m.mount_point: m for m in read_mountinfo(paths.proc)}
    except HvGuestError as exc:
        say(f"hvguestctl: {exc}", file=sys.stderr)
        mounts = {}
    failures = 0
    for entry in reversed(record.get("mounts", [])):
        mp = entry.get("mount_point")
        state = entry.get("state", "planned")
        if not isinstance(mp, str):
            continue
        if state not in ("planned", "frozen"):
            say(f"{mp}: left alone ({state}: not frozen by hvguest)")
            continue
        current = mounts.get(mp)
        if mounts and (current is None or current.dev != entry.get("dev")):
            say(f"{mp}: left alone: the filesystem mounted there is not the one hvguest froze")
            continue
        try:
            fd = os.open(mp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            say(f"{mp}: cannot open: {exc.strerror}", file=sys.stderr)
            failures += 1
            continue
        try:
            fcntl.ioctl(fd, FITHAW, 0)
            say(f"{mp}: thawed")
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                if not args.if_frozen:
                    say(f"{mp}: was not frozen")
            else:
                say(
                    f"{mp}: FITHAW failed: {os.strerror(exc.errno or 0)}; try 'fsfreeze -u {mp}'",
                    file=sys.stderr,
                )
                failures += 1
        finally:
            os.close(fd)
    if not failures:
        clear_record(paths)
    return 1 if failures else 0


# -- plan -------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from hvguest.errors import ConfigError
    from hvguest.vss.foreign import discover_foreign
    from hvguest.vss.hooks import discover, hook_dirs
    from hvguest.vss.mounts import plan_at
    from hvguest.vss.settings import VssSettings

    paths = _paths(args)
    try:
        settings = common.load_cli_config(args, paths).get(VssSettings)
    except ConfigError as exc:
        say(f"hvguestctl: {exc}", file=sys.stderr)
        return 1
    plan = plan_at(paths.proc, paths.sys, exclude=settings.exclude, include=settings.include)
    hooks = discover(hook_dirs(paths.etc, paths.lib))
    foreign = discover_foreign(paths, settings.foreign_hooks)
    order = _hook_order(hooks.hooks if settings.hooks else [], foreign)
    if args.json:
        common.print_json(
            {
                "freeze_order": [dataclasses.asdict(fs) for fs in plan.order],
                "skipped": [dataclasses.asdict(s) for s in plan.skipped],
                "hooks": [dataclasses.asdict(h) for h in hooks.hooks] if settings.hooks else [],
                "refused_hooks": [dataclasses.asdict(r) for r in hooks.refused],
                "hook_order": [
                    {"phase": phase, "convention": conv, "run": run, "refused": refused}
                    for phase, conv, run, refused in order
                ],
                "foreign_skipped": [{"convention": c, "why": w} for c, w in foreign.skipped],
            }
        )
        return 0
    say("freeze order (thaw runs in reverse):")
    if not plan.order:
        say("  nothing: a backup would be crash-consistent only")
    for n, fs in enumerate(plan.order, 1):
        extra = ""
        if fs.also_mounted_at:
            extra += f"; also mounted at {', '.join(fs.also_mounted_at)}"
        if fs.backed_by:
            extra += "; before the filesystem holding its backing file"
        say(f"  {n}. {fs.mount_point} ({fs.fstype} on {fs.source}, {fs.dev}){extra}")
    if plan.skipped:
        say("not frozen:")
        for s in plan.skipped:
            say(f"  {s.mount_point} ({s.fstype}): {s.reason}")
    if not settings.hooks:
        say("hooks: disabled (vss.hooks: false)")
    say("hooks, in the order they run:")
    if not order:
        say("  none")
    for phase, conv, run, refused in order:
        note = f"  [REFUSED: {refused}]" if refused else ""
        say(f"  {phase:<6} {conv:<7} {run}{note}")
    for r in hooks.refused:
        say(f"  refused {r.path}: {r.reason}")
    for conv, why in foreign.skipped:
        say(f"  {conv} scripts not run: {why}")
    return 0


def _hook_order(own: Any, foreign: Any) -> list[tuple[str, str, str, str | None]]:
    """(phase, convention, command, refusal) for a freeze that succeeds: freeze,
    then thaw (a failed freeze gives what ran the failure call instead)."""
    from hvguest.vss.foreign_run import ForeignRunner

    rows: list[tuple[str, str, str, str | None]] = []
    for h in own:
        rows.append(("freeze", "hvguest", f"{h.path} freeze", None))
    for h in foreign.hooks:
        if h.freeze is not None:
            rows.append(("freeze", h.convention, h.freeze.show(), h.freeze.refused))
    runner = ForeignRunner(foreign, timeout=1, total_timeout=1)
    runner.reached = [(g, h) for g, group in enumerate(foreign.groups) for h in group.hooks]
    for h, call in runner.owed("thaw"):
        rows.append(("thaw", h.convention, call.show(), call.refused))
    for h in reversed(list(own)):
        rows.append(("thaw", "hvguest", f"{h.path} thaw", None))
    return rows
