"""chrony and the other NTP clients: who uses the host clock, and setting chrony up.

``read_chrony_config`` follows chrony.conf's ``confdir`` and ``include`` lines under
the injectable /etc; ``setup_chrony`` adds a conf.d drop-in naming the host clock as
a refclock and restarts chrony.
"""

from __future__ import annotations

import glob
import os
import re
import time
from dataclasses import dataclass, field

from hvguest.command import Runner, run_command
from hvguest.errors import LocalUsageError
from hvguest.files import atomic_write
from hvguest.paths import Paths
from hvguest.proc import process_names
from hvguest.timesync.ptp import UDEV_LINK, PtpClock, find_hyperv_ptp

DROPIN_NAME = "hvguest-hyperv-phc.conf"
NTP_CLIENTS = ("chronyd", "ntpd", "systemd-timesyn", "openntpd", "ntpsec")  # comm is 15 chars


@dataclass(frozen=True)
class Refclock:
    file: str
    line: int
    device: str
    text: str


@dataclass
class ChronyConfig:
    files: list[str] = field(default_factory=list)  # files read, main first
    main: str | None = None  # the main chrony.conf, None when chrony is not installed
    confdirs: list[str] = field(default_factory=list)  # directories it includes
    refclocks: list[Refclock] = field(default_factory=list)  # refclock PHC lines

    def uses(self, clock: PtpClock | None, paths: Paths) -> list[Refclock]:
        """The refclock lines that read ``clock``."""
        if clock is None:
            return []
        wanted = {
            os.path.join("/dev", UDEV_LINK),
            os.path.join("/dev", clock.name),
            clock.device,
            clock.node,
        }
        out = []
        for ref in self.refclocks:
            dev = ref.device.split(":", 1)[0]
            if dev in wanted or _under(paths.dev, dev) in wanted:
                out.append(ref)
        return out


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/")) if path.startswith("/dev/") else path


def _rebase(paths: Paths, path: str) -> str:
    """A path named in chrony.conf (/etc/...) under our injectable /etc root."""
    if path.startswith("/etc/"):
        return os.path.join(paths.os_etc, path[len("/etc/"):])
    return path


_REFCLOCK = re.compile(r"^\s*refclock\s+PHC\s+(\S+)", re.IGNORECASE)


def read_chrony_config(paths: Paths) -> ChronyConfig:
    cfg = ChronyConfig()
    for candidate in ("chrony/chrony.conf", "chrony.conf"):
        path = os.path.join(paths.os_etc, candidate)
        if os.path.isfile(path):
            cfg.main = path
            break
    if cfg.main is None:
        return cfg
    seen: set[str] = set()

    def read(path: str, depth: int) -> None:
        if path in seen or depth > 4:
            return
        seen.add(path)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        cfg.files.append(path)
        for number, raw in enumerate(lines, 1):
            line = raw.split("#", 1)[0].split("!", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            key = words[0].lower()
            if key == "refclock":
                m = _REFCLOCK.match(line)
                if m:
                    cfg.refclocks.append(Refclock(path, number, m.group(1), line))
            elif key == "confdir" and len(words) > 1:
                for d in words[1:]:
                    directory = _rebase(paths, d)
                    cfg.confdirs.append(directory)
                    for conf in sorted(glob.glob(os.path.join(directory, "*.conf"))):
                        read(conf, depth + 1)
            elif key == "include" and len(words) > 1:
                pattern = _rebase(paths, words[1])
                cfg.confdirs.append(os.path.dirname(pattern))
                for conf in sorted(glob.glob(pattern)):
                    read(conf, depth + 1)

    read(cfg.main, 0)
    return cfg


def running_ntp_clients(paths: Paths) -> list[str]:
    """Names of NTP daemons running now (from <proc>/*/comm)."""
    found = {"systemd-timesyncd" if comm == "systemd-timesyn" else comm
             for comm in process_names(paths) if comm in NTP_CLIENTS}
    return sorted(found)


# chronyc -c sources, column 2 (state) of a source
CHRONY_STATES = {"*": "selected", "+": "combined", "-": "not combined", "?": "unreachable",
                 "x": "falseticker", "~": "too variable"}


def chrony_source_state(runner: Runner) -> str | None:
    """State of chrony's PHC reference clock ("selected", "unreachable", ...),
    "not a source" when chronyd has none, None when chronyc gave no answer."""
    result = runner(["chronyc", "-n", "-c", "sources"], 3.0)
    if not result.ok:
        return None
    for line in result.output.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0] == "#" and fields[2].upper().startswith("PHC"):
            return CHRONY_STATES.get(fields[1], fields[1])
    return "not a source"


@dataclass(frozen=True)
class SetupResult:
    changed: bool
    dropin: str | None
    line: str
    message: str


def refclock_line(ptp: PtpClock, paths: Paths) -> str:
    # Name the device as chrony will see it: the path under the real /dev.
    device = "/dev/" + os.path.relpath(ptp.device, paths.dev)
    return f"refclock PHC {device} poll 3 dpoll -2 offset 0"


def setup_chrony(
    paths: Paths,
    *,
    runner: Runner = run_command,
    restart_timeout: float = 20.0,
    systemd: bool = True,
) -> SetupResult:
    """Make chrony use the host clock as a refclock, through a conf.d drop-in.

    Already configured -> changed False, nothing restarted. Raises
    LocalUsageError when there is no host clock or chrony is not installed or
    includes no drop-in directory.
    """
    ptp = find_hyperv_ptp(paths)
    if ptp is None:
        raise LocalUsageError(
            "no PTP clock named 'hyperv': the host does not offer Time Synchronization, "
            "or hv_utils is not loaded (Enable-VMIntegrationService -VMName <vm> "
            "-Name 'Time Synchronization')"
        )
    chrony = read_chrony_config(paths)
    if chrony.main is None:
        raise LocalUsageError("chrony is not installed (apt-get install chrony)")
    line = refclock_line(ptp, paths)
    existing = chrony.uses(ptp, paths)
    if existing:
        ref = existing[0]
        return SetupResult(False, None, ref.text,
                           f"already configured: {ref.file}:{ref.line}: {ref.text}")
    confdir = next((d for d in chrony.confdirs if d.rstrip("/").endswith("conf.d")),
                   chrony.confdirs[0] if chrony.confdirs else None)
    if confdir is None:
        raise LocalUsageError(
            f"{chrony.main} includes no drop-in directory: add "
            f"'confdir /etc/chrony/conf.d' to it, or add this line yourself: {line}"
        )
    dropin = os.path.join(confdir, DROPIN_NAME)
    atomic_write(dropin, "# Written by hvguestctl timesync setup: the Hyper-V host clock.\n"
                         f"{line}\n")
    if not systemd:
        return SetupResult(True, dropin, line,
                           f"wrote {dropin}; restart chronyd to use it (no systemd running)")
    unit = "chrony.service" if os.path.basename(os.path.dirname(chrony.main)) == "chrony" \
        else "chronyd.service"
    start = time.monotonic()
    result = runner(["systemctl", "restart", unit], restart_timeout)
    if not result.ok:
        raise LocalUsageError(
            f"wrote {dropin}, but 'systemctl restart {unit}' failed ({result.code}): "
            f"{result.output or 'no output'}"
        )
    took = time.monotonic() - start
    return SetupResult(True, dropin, line, f"wrote {dropin} and restarted {unit} ({took:.1f} s)")
