"""hvguestctl timesync {status,setup}: the host's PTP clock and chrony.

``status``: the "hyperv" PTP clock, the guest clock's offset to it, and whether
an NTP client uses it (exit 0 ok, 1 no host clock, 2 offset past the limit or
clock unreadable). ``setup``: writes a chrony drop-in with the host clock as a
refclock and restarts chrony; already configured exits 0 without a restart.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hvguest.cli.heartbeat_config import settings_for
from hvguest.cli.privilege import require_root
from hvguest.proc import systemd_running
from hvguest.roots import add_root_options, paths_from_args
from hvguest.text import say
from hvguest.timesync import check as timesync
from hvguest.timesync import chrony


def register(sub: Any) -> None:
    p = sub.add_parser("timesync", help="host clock offset and chrony set-up",
                       description="Time synchronization with the Hyper-V host's PTP clock.")
    tsub = p.add_subparsers(dest="timesync_command", metavar="ACTION")
    sp = tsub.add_parser("status", help="offset of the guest clock to the host's")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--config", metavar="PATH", help="configuration file (warn offset)")
    add_root_options(sp)
    sp.set_defaults(func=run_status)
    up = tsub.add_parser("setup", help="make chrony use the host clock as a refclock")
    up.add_argument("--config", metavar="PATH", help="configuration file (restart timeout)")
    add_root_options(up)
    up.set_defaults(func=run_setup)
    p.set_defaults(func=run_status, json=False, config=None)


def run_status(args: argparse.Namespace) -> int:
    paths = paths_from_args(args)
    settings = settings_for(args, paths.etc)
    st = timesync.check(paths, warn_offset_ms=settings.timesync_warn_offset_ms)
    if getattr(args, "json", False):
        json.dump(st.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _render(st)
    if st.ptp is None:
        return 1
    if st.error or st.offset_exceeded:
        return 2
    return 0


def _render(st: timesync.TimesyncStatus) -> None:
    if st.ptp is None:
        say("no PTP clock named 'hyperv': the host does not offer Time Synchronization "
              "(or hv_utils is not loaded)")
        return
    say(f"host clock:  {st.ptp.device} ({st.ptp.name})")
    if st.offset_ms is not None:
        flag = "  PAST THE LIMIT" if st.offset_exceeded else ""
        say(f"offset:      {st.offset_ms:+.3f} ms (guest minus host; limit "
              f"{st.warn_offset_ms:g} ms){flag}")
    else:
        say(f"offset:      unknown: {st.error}")
    say(f"NTP clients: {', '.join(st.ntp_clients) or 'none running'}")
    if st.chrony_refclock:
        state = f"; source {st.chrony_source_state}" if st.chrony_source_state else ""
        say(f"chrony:      uses the host clock ({st.chrony_refclock}{state})")
    elif st.chrony_installed:
        say("chrony:      does not use the host clock: hvguestctl timesync setup")
    else:
        say("chrony:      not installed")


def run_setup(args: argparse.Namespace) -> int:
    require_root("timesync setup")
    paths = paths_from_args(args)
    settings = settings_for(args, paths.etc)
    result = chrony.setup_chrony(
        paths,
        restart_timeout=settings.chrony_restart_timeout,
        systemd=systemd_running(paths),
    )
    say(result.message)
    return 0
