"""Is each hvguest daemon running, and what did it publish: systemd first, else the pid."""

from __future__ import annotations

import json

from hvguest.command import Runner
from hvguest.paths import Paths
from hvguest.state import pid_alive, state_file
from hvguest.status.document import DaemonInfo, PublishedState, program_name, unit_name


def unit_state(unit: str, runner: Runner) -> tuple[str, str] | None:
    """(ActiveState, SubState) of ``unit``; None when systemctl gave no answer."""
    result = runner(["systemctl", "show", "--no-pager", "-p", "ActiveState,SubState", unit], 5.0)
    if not result.ok:
        return None
    values = dict(line.partition("=")[::2] for line in result.output.splitlines() if "=" in line)
    return values.get("ActiveState", "unknown"), values.get("SubState", "unknown")


def read_state(paths: Paths, daemon: str, unreadable: list[str]) -> PublishedState | None:
    """The daemon's state file; a file that cannot be read is named in ``unreadable``."""
    path = state_file(paths, daemon)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        unreadable.append(f"{path}: {exc.strerror}")
        return None
    except (OSError, ValueError) as exc:
        unreadable.append(f"{path}: {exc}")
        return None
    return doc if isinstance(doc, dict) else None


def daemon_info(
    paths: Paths,
    daemon: str,
    doc: PublishedState | None,
    use_systemd: bool,
    runner: Runner,
    unreadable_state: bool = False,
) -> DaemonInfo:
    info: DaemonInfo = {
        "name": program_name(daemon),
        "unit": unit_name(daemon),
        "running": False,
        "source": "none",
        "active_state": None,
        "sub_state": None,
        "pid": doc.get("pid") if doc else None,
        "state": doc.get("state") if doc else None,
        "started": doc.get("started") if doc else None,
        "updated": doc.get("updated") if doc else None,
        "version": doc.get("version") if doc else None,
        "stale_state": False,
    }
    if use_systemd:
        st = unit_state(unit_name(daemon), runner)
        if st is not None:
            info["source"] = "systemd"
            info["active_state"], info["sub_state"] = st
            info["running"] = st[0] in ("active", "reloading")
    if info["source"] == "none" and doc is not None:
        info["source"] = "pid"
        info["running"] = pid_alive(paths, doc.get("pid"))
    elif info["source"] == "none" and unreadable_state:
        info["source"] = "unreadable"
    if doc is not None and not info["running"]:
        info["stale_state"] = True
    return info
