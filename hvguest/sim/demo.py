"""``hvguest-sim demo``: a short, readable host scenario against the daemons.

Each role lists the hvguest daemon module, the reference command it falls back to,
and the host steps to play. Adding a daemon means adding a ``Role``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hvguest.sim.client import SimClient, SimError
from hvguest.wire.status import status_name

Action = Callable[[SimClient, str], str]


@dataclass
class Role:
    service: str
    module: str  # hvguest's daemon, used when importable
    args: list[str]
    reference: list[str]
    steps: list[tuple[str, Action]]
    start: dict[str, Any] = field(default_factory=dict)
    setup: Callable[[str], dict[str, Any]] | None = None  # workdir -> extra start kwargs


def _st(code: int) -> str:
    return status_name(code)


def _auto_pool(sim: SimClient, _wd: str) -> str:
    items = sim.kvp_enumerate_all(2)
    return "\n".join(f"    {k} = {v}" for k, v in items) or "    (empty)"


def _kvp_set(sim: SimClient, _wd: str) -> str:
    return _st(sim.kvp_set(0, "HostName", "demo-host"))


def _kvp_get(sim: SimClient, _wd: str) -> str:
    status, value = sim.kvp_get(0, "HostName")
    return f"{_st(status)} value={value!r}"


def _guest_pool(sim: SimClient, _wd: str) -> str:
    items = sim.kvp_enumerate_all(1)
    return "\n".join(f"    {k} = {v}" for k, v in items) or "    (no guest keys)"


def _vss_cycle(sim: SimClient, _wd: str) -> str:
    hb = sim.vss_hot_backup()
    freeze = sim.vss_freeze()
    thaw = sim.vss_thaw()
    return f"HOT_BACKUP {_st(hb[0])}, FREEZE {_st(freeze)}, THAW {_st(thaw)}"


def _fcopy(sim: SimClient, wd: str) -> str:
    src = os.path.join(wd, "hello.txt")
    with open(src, "w") as f:
        f.write("hello from the host\n")
    status = sim.fcopy_send(src, "/tmp", "hello.txt", flags=1)
    got = sim.exec(["cat", "/tmp/hello.txt"]).stdout.decode(errors="replace").strip()
    return f"{_st(status)}; guest file reads {got!r}"


def _loop_fs(wd: str) -> dict[str, Any]:
    image = os.path.join(wd, "ext4.img")
    # Created here, never opened if present: mkfs must not format what a path
    # someone else could have planted points to.
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.ftruncate(fd, 64 << 20)
    finally:
        os.close(fd)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, timeout=60)
    return {"loop_filesystems": [(image, "ext4", "/mnt/demo")], "network": False}


ROLES = [
    Role("kvp", "hvguest.daemons.kvpd", [], ["/usr/sbin/hv_kvp_daemon", "-n"], [
        ("Host enumerates the AUTO pool (GuestIntrinsicExchangeItems)", _auto_pool),
        ("Host sets HostName in pool 0 (External)", _kvp_set),
        ("Host reads HostName back from pool 0", _kvp_get),
        ("Host reads the guest's keys from pool 1 (GuestExchangeItems)", _guest_pool),
    ]),
    Role("vss", "hvguest.daemons.vssd", ["--log-target", "stderr"],
         ["/usr/sbin/hv_vss_daemon", "-n"],
         [("Checkpoint: HOT_BACKUP, FREEZE, THAW of a loop ext4", _vss_cycle)],
         setup=_loop_fs),
    Role("fcopy", "hvguest.daemons.fcopyd", ["--log-target", "stderr"],
         ["/usr/sbin/hv_fcopy_daemon", "-n"],
         [("Copy-VMFile hello.txt to /tmp", _fcopy)], start={"network": False}),
]


def command_for(role: Role, reference: bool) -> tuple[list[str], str]:
    if not reference and importlib.util.find_spec(role.module) is not None:
        return [sys.executable, "-m", role.module, *role.args], f"hvguest ({role.module})"
    if os.path.exists(role.reference[0]):
        why = "requested" if reference else f"{role.module} is not available yet"
        return role.reference, f"reference {role.reference[0]} ({why})"
    return [], "no daemon available"


def play(role: Role, workdir: str, reference: bool,
         keep: list[tuple[str, SimClient]] | None = None) -> list[str]:
    """Play ``role``; with ``keep`` the simulator stays up and is appended to it."""
    lines = [f"== {role.service.upper()} =="]
    command, label = command_for(role, reference)
    lines.append(f"  daemon: {label}")
    if not command:
        return lines
    wd = os.path.join(workdir, role.service)
    os.makedirs(wd, exist_ok=True)
    start = dict(role.start)
    if role.setup is not None:
        start.update(role.setup(wd))
    sim: SimClient | None = None
    try:
        sim = SimClient.start(command, services=(role.service,),
                              workdir=os.path.join(wd, "sim"), **start)
        for title, action in role.steps:
            lines.append(f"  - {title}:")
            result = action(sim, wd)
            lines.append(result if result.startswith("    ") else f"    {result}")
    except SimError as exc:
        lines.append(f"  failed: {exc}")
    finally:
        if sim is not None:
            if keep is None:
                sim.close()
            else:
                keep.append((role.service, sim))
    return lines


class WorkdirError(Exception):
    pass


def make_workdir(path: str) -> str:
    """Create ``path`` afresh (0700, ours): root writes images and runs mkfs in it, so
    nothing in it may come from anyone else. Its parent must not let others replace
    it (not writable by others, or sticky like /tmp)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    try:
        st = os.stat(parent)
    except OSError as exc:
        raise WorkdirError(f"--workdir {path}: parent directory: {exc.strerror}") from exc
    others_write = st.st_mode & 0o022 and not st.st_mode & 0o1000
    if others_write or st.st_uid not in (0, os.geteuid()):
        raise WorkdirError(
            f"--workdir {path}: its parent {parent} can be changed by other users"
        )
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        raise WorkdirError(
            f"--workdir {path} must not exist: it is created afresh (mode 0700), so that"
            " nothing in it was placed there by someone else"
        ) from None
    except OSError as exc:
        raise WorkdirError(f"--workdir {path}: {exc.strerror}") from exc
    os.chmod(path, 0o700)  # whatever the umask
    return path


def main(workdir: str | None = None, reference: bool = False) -> int:
    if os.geteuid() != 0:
        print("hvguest-sim demo needs root (private namespaces, FUSE, loop devices)",
              file=sys.stderr)
        return 1
    if workdir is not None:
        try:
            workdir = make_workdir(workdir)
        except WorkdirError as exc:
            print(f"hvguest-sim demo: {exc}", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="hvguest-demo-") as tmp:
        base = workdir or tmp
        running: list[tuple[str, SimClient]] = []
        try:
            for role in ROLES:
                print("\n".join(play(role, base, reference, running)), flush=True)
            print("\n".join(status_screen(running, base, reference)), flush=True)
        finally:
            for _, sim in running:
                sim.close()
    return 0


# -- closing screen: hvguestctl status over every service --------------------------------
# The daemons stay up until the status is shown. hvguest.sim.demovm writes the
# VMBus sysfs the simulator does not model, runs hvguest-heartbeatd against it and prints
# ``hvguestctl status`` with each sandboxed daemon's published state. It runs as a
# program: the simulator imports no daemon code.


def status_screen(sims: list[tuple[str, SimClient]], base: str, reference: bool) -> list[str]:
    lines = ["== STATUS =="]
    if reference or importlib.util.find_spec("hvguest.daemons.heartbeatd") is None:
        return lines + ["  (hvguestctl status reports hvguest's own daemons)"]
    args: list[str] = []
    for service, sim in sims:
        args += ["--state", f"{service}={sim.root}/run/hvguest/{service}.json"]
    r = subprocess.run([sys.executable, "-m", "hvguest.sim.demovm",
                        "--workdir", os.path.join(base, "status"), *args],
                       capture_output=True, text=True, timeout=120, check=False)
    lines += r.stdout.rstrip("\n").splitlines()
    if not r.stdout and r.stderr:
        lines.append(f"  failed: {r.stderr.strip().splitlines()[-1]}")
    return lines
