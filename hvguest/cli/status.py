"""hvguestctl status [--json] [SERVICE]: the one screen to open when something fails.

Exit codes: 0 healthy (or not a Hyper-V guest: nothing to do), 1 error,
2 degraded. The report is ``hvguest.status``: built as data, then rendered.
Also registers ``hvguestctl shutdown-hooks`` (hvguest.cli.shutdown_hooks).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from hvguest.cli import direct, shutdown_hooks
from hvguest.cli.heartbeat_config import settings_for
from hvguest.roots import add_root_options, paths_from_args
from hvguest.status import render_json
from hvguest.status.collect import collect
from hvguest.status.document import SERVICES
from hvguest.status.render_text import render_service, render_summary
from hvguest.text import say
from hvguest.vss.record import read_record


def register(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="integration services: offered, bound, running, last operation, problems",
        description="Show, for heartbeat, shutdown, timesync, kvp, vss and fcopy, whether the "
        "host offers the service, the kernel driver is bound and the hvguest daemon runs, "
        "with the last operation and each problem's remedy. Exit 0 ok, 1 error, 2 degraded.",
    )
    p.add_argument("service", nargs="?", choices=SERVICES, help="show one service in detail")
    p.add_argument("--json", action="store_true", help="the documented JSON document")
    p.add_argument("--prometheus", action="store_true",
                   help="the state as Prometheus metrics (text exposition format)")
    p.add_argument("--textfile-dir", metavar="DIR",
                   help="with --prometheus: write DIR/hvguest.prom atomically for "
                        "node_exporter's textfile collector (nothing while a freeze runs)")
    p.add_argument("--config", metavar="PATH", help="configuration file (timesync warn offset)")
    add_root_options(p)
    p.set_defaults(func=run)
    shutdown_hooks.register(sub)  # shown beside status in --help


def run(args: argparse.Namespace) -> int:
    paths = paths_from_args(args)
    settings = settings_for(args, paths.etc)
    if args.textfile_dir and not args.prometheus:
        say("hvguestctl: --textfile-dir goes with --prometheus", file=sys.stderr)
        return 1
    if args.prometheus and args.textfile_dir and read_record(paths) is not None:
        # A write could land on a frozen filesystem and hang until the thaw.
        say("hvguestctl: filesystems are frozen now; metrics not written", file=sys.stderr)
        return 0
    doc = collect(paths, warn_offset_ms=settings.timesync_warn_offset_ms)
    if args.prometheus:
        return _prometheus(doc, args.textfile_dir)
    if doc["hyperv"] and not args.service:
        doc["direct"] = direct.status_row(args, paths)
    if args.service:
        if args.json:
            render_json.dump(render_json.one_service(doc, args.service), sys.stdout)
        else:
            render_service(doc, args.service, sys.stdout)
        return render_json.service_exit(doc["services"][args.service])
    if args.json:
        render_json.dump(doc, sys.stdout)
    else:
        render_summary(doc, sys.stdout)
    return int(doc["exit_code"])


def _prometheus(doc: Any, textfile_dir: str | None) -> int:
    from hvguest.status.prometheus import render  # prometheus_client: only here

    text = render(doc)
    if textfile_dir is None:
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
        return 0
    from hvguest.files import atomic_write

    if not os.path.isdir(textfile_dir):
        say(f"hvguestctl: {textfile_dir} is not a directory (node_exporter's textfile "
            "collector reads it): nothing written", file=sys.stderr)
        return 1
    # node_exporter reads *.prom: the temporary file must not end in .prom.
    atomic_write(os.path.join(textfile_dir, "hvguest.prom"), text, mode=0o644, fsync=False)
    return 0
