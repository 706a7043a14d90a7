"""hvguestctl fcopy: the file-copy daemon's transfers and its path policy.

``status``  the transfer in progress (bytes done) and the daemon's state;
``recent``  the last finished transfers (name, size, sha256, result, duration);
``check PATH``  would a copy to PATH be allowed by the policy, and why not.
Exit codes: 0 ok / allowed, 1 error / refused, 2 degraded (daemon not running).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from hvguest.config import load_config
from hvguest.fcopy.policy import PathPolicy
from hvguest.fcopy.settings import FcopySettings
from hvguest.roots import add_root_options, paths_from_args
from hvguest.state import pid_alive, read_state
from hvguest.text import say, write_line


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fcopy",
        help="file copy from the host: transfers and the path policy",
        description="Transfers received by hvguest-fcopyd and checks of its path policy.",
    )
    fsub = p.add_subparsers(dest="fcopy_command", metavar="ACTION")
    for name, helptext in (
        ("status", "the daemon's state and the transfer in progress"),
        ("recent", "the last finished transfers"),
    ):
        sp = fsub.add_parser(name, help=helptext, description=helptext)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        add_root_options(sp)
        sp.set_defaults(func=run_status if name == "status" else run_recent)
    cp = fsub.add_parser(
        "check",
        help="would a copy to PATH be allowed, and why not",
        description="Check PATH (the full path of the file the host would write) against "
        "the allowed roots, '..' and symlink rules of the fcopy configuration. Exit 0 allowed, "
        "1 refused.",
    )
    cp.add_argument("path", metavar="PATH")
    cp.add_argument(
        "--no-create-path", action="store_true", help="as if the host did not set CREATE_PATH"
    )
    cp.add_argument(
        "--no-overwrite", action="store_true", help="as if the host did not set OVER_WRITE"
    )
    cp.add_argument("--config", metavar="PATH", help="configuration file")
    cp.add_argument("--json", action="store_true", help="machine-readable output")
    add_root_options(cp)
    cp.set_defaults(func=run_check)
    p.set_defaults(func=run_status, json=False)


def _settings(args: argparse.Namespace) -> FcopySettings:
    paths = paths_from_args(args)
    path = getattr(args, "config", None) or paths.config_file
    config = load_config(path, missing_ok=getattr(args, "config", None) is None)
    settings: FcopySettings = config.get(FcopySettings)
    return settings


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def run_status(args: argparse.Namespace) -> int:
    paths = paths_from_args(args)
    doc = read_state(paths, "fcopy")
    if doc is None:
        if args.json:
            json.dump({"running": False, "state": None}, sys.stdout)
            say()
        else:
            say(
                "hvguest-fcopyd has published no state: not running (is the Guest Service "
                "Interface enabled on the host?)"
            )
        return 2
    alive = pid_alive(paths, doc.get("pid")) and doc.get("state") not in ("stopped", "failed")
    details = doc.get("details") or {}
    if args.json:
        json.dump({"running": alive, **doc}, sys.stdout, indent=2)
        say()
        return 0 if alive else 2
    out = sys.stdout
    write_line(out, f"hvguest-fcopyd: {doc.get('state')}{'' if alive else ' (not running)'}")
    write_line(out, f"  transport: {details.get('transport', '?')}, device: {doc.get('device')}")
    write_line(
        out,
        f"  transfers: {details.get('transfers_ok', 0)} ok, "
        f"{details.get('transfers_failed', 0)} failed"
    )
    current = details.get("in_progress")
    if current:
        size = current.get("file_size") or 0
        done = current.get("bytes_done") or 0
        pct = f" ({100 * done / size:.0f} %)" if size else ""
        write_line(
            out,
            f"  receiving {current.get('name')}: {_size(done)} of {_size(size)}{pct}, "
            f"{current.get('seconds')} s"
        )
    else:
        write_line(out, "  no transfer in progress")
    error = doc.get("last_error")
    if error:
        write_line(out, f"  last error: {error.get('message')} ({error.get('time')})")
    return 0 if alive else 2


def run_recent(args: argparse.Namespace) -> int:
    paths = paths_from_args(args)
    doc = read_state(paths, "fcopy")
    recent = ((doc or {}).get("details") or {}).get("recent_transfers") or []
    if args.json:
        json.dump(recent, sys.stdout, indent=2)
        say()
        return 0 if doc is not None else 2
    if doc is None:
        say("hvguest-fcopyd has published no state: not running")
        return 2
    if not recent:
        say("no transfers yet")
        return 0
    render_recent(recent, sys.stdout)
    return 0


def render_recent(recent: list[dict[str, Any]], out: TextIO) -> None:
    for r in reversed(recent):
        sha = (r.get("sha256") or "-")[:16]
        write_line(
            out,
            f"{r.get('finished', '?')}  {r.get('result', '?'):<24} {_size(r.get('size')):>10}"
            f"  {r.get('duration', 0):>7.2f} s  {sha}  {r.get('name')}"
        )
        if r.get("result") != "ok" and r.get("detail"):
            write_line(out, f"    {r['detail']}")


def run_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    policy = PathPolicy(settings.allowed_roots, dir_mode=settings.dir_mode_bits)
    verdict = policy.check(
        args.path, create=not args.no_create_path, overwrite=not args.no_overwrite
    )
    if args.json:
        json.dump(
            {
                "path": verdict.path,
                "allowed": verdict.allowed,
                "reason": verdict.reason,
                "root": verdict.root,
                "would_create": list(verdict.missing) if verdict.allowed else [],
                "exists": verdict.exists,
                "allowed_roots": list(policy.roots),
            },
            sys.stdout,
            indent=2,
        )
        say()
    else:
        word = "allowed" if verdict.allowed else "refused"
        say(f"{args.path}: {word}: {verdict.reason}")
        if not verdict.allowed:
            say(
                f"  allowed roots: {', '.join(policy.roots) or 'none'} "
                "(fcopy.allowed_roots in hvguest.yaml)"
            )
    return 0 if verdict.allowed else 1
