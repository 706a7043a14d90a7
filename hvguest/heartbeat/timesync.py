"""Time sync: the host's PTP clock, the guest clock's offset to it, and chrony.

hv_utils registers a PTP clock named "hyperv" (``<sys>/class/ptp/ptpN/clock_name``).
Reading it gives the host's last time sample advanced by the partition
reference counter; the read fails with ESTALE when the host sent no sample for
600 s (time sync off on the host, or the VM was paused). The offset is measured
like phc2sys does: system clock before and after one PHC read, keeping the
sample with the shortest bracket.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import glob
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hvguest.errors import LocalUsageError
from hvguest.paths import Paths

PTP_NAME = "hyperv"
UDEV_LINK = "ptp_hyperv"  # systemd's udev rules add /dev/ptp_hyperv
DROPIN_NAME = "hvguest-hyperv-phc.conf"
NTP_CLIENTS = ("chronyd", "ntpd", "systemd-timesyn", "openntpd", "ntpsec")  # comm is 15 chars

CLOCK_REALTIME = 0


@dataclass(frozen=True)
class PtpClock:
    name: str  # "ptp0"
    device: str  # preferred path: /dev/ptp_hyperv when udev made it, else /dev/ptpN
    node: str  # /dev/ptpN


def find_hyperv_ptp(paths: Paths) -> PtpClock | None:
    """The PTP clock hv_utils registered, or None (no time sync channel)."""
    for clock_name in sorted(glob.glob(os.path.join(paths.sys, "class", "ptp", "ptp*",
                                                    "clock_name"))):
        try:
            with open(clock_name, encoding="ascii", errors="replace") as f:
                if f.read().strip() != PTP_NAME:
                    continue
        except OSError:
            continue
        name = os.path.basename(os.path.dirname(clock_name))
        node = os.path.join(paths.dev, name)
        link = os.path.join(paths.dev, UDEV_LINK)
        return PtpClock(name, link if os.path.exists(link) else node, node)
    return None


# -- reading the clock --------------------------------------------------------


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc: Any = None


def _clock_gettime(clockid: int) -> float:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    ts = _Timespec()
    if _libc.clock_gettime(ctypes.c_int(clockid), ctypes.byref(ts)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return float(ts.tv_sec) + float(ts.tv_nsec) / 1e9


def fd_to_clockid(fd: int) -> int:
    """The dynamic POSIX clock id of an open /dev/ptpN (FD_TO_CLOCKID)."""
    return ((~fd) << 3) | 3


class ClockSource(Protocol):
    def sample(self) -> tuple[float, float, float]:
        """(system time before, host clock, system time after), in seconds."""
        ...

    def close(self) -> None: ...


class PhcClockSource:
    """Reads /dev/ptpN through clock_gettime on its dynamic clock id."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        self._clockid = fd_to_clockid(self._fd)

    def sample(self) -> tuple[float, float, float]:
        before = _clock_gettime(CLOCK_REALTIME)
        phc = _clock_gettime(self._clockid)
        after = _clock_gettime(CLOCK_REALTIME)
        return before, phc, after

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


@dataclass(frozen=True)
class Offset:
    offset: float  # seconds, guest minus host (positive: the guest is ahead)
    delay: float  # width of the bracket of the best sample


def measure_offset(source: ClockSource, samples: int = 5) -> Offset:
    """Best of ``samples`` reads. Raises OSError (ESTALE: no recent host sample)."""
    best: Offset | None = None
    for _ in range(max(1, samples)):
        before, phc, after = source.sample()
        delay = after - before
        candidate = Offset((before + after) / 2 - phc, delay)
        if best is None or candidate.delay < best.delay:
            best = candidate
    assert best is not None
    return best


def describe_read_error(exc: OSError) -> str:
    if exc.errno == errno.ESTALE:
        return ("the host sent no time sample for over 600 s (Time Synchronization off on the "
                "host, or the VM was paused)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot read the host clock: {exc.strerror} (run as root)"
    return f"cannot read the host clock: {exc.strerror or exc}"


# -- NTP clients and chrony configuration -----------------------------------------


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
    found: set[str] = set()
    try:
        entries = os.listdir(paths.proc)
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(paths.proc, entry, "comm"), encoding="utf-8") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in NTP_CLIENTS:
            found.add("systemd-timesyncd" if comm == "systemd-timesyn" else comm)
    return sorted(found)


# -- status -------------------------------------------------------------------------


ClockOpener = Callable[[str], ClockSource]


@dataclass
class TimesyncStatus:
    ptp: PtpClock | None
    offset_ms: float | None = None
    delay_ms: float | None = None
    error: str | None = None
    ntp_clients: list[str] = field(default_factory=list)
    chrony_installed: bool = False
    chrony_refclock: str | None = None  # "file:line" of the refclock reading the host clock
    chrony_source_state: str | None = None  # what chronyc says of that refclock now
    warn_offset_ms: float = 100.0

    @property
    def offset_exceeded(self) -> bool:
        return self.offset_ms is not None and abs(self.offset_ms) > self.warn_offset_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "ptp_device": self.ptp.device if self.ptp else None,
            "ptp_clock": self.ptp.name if self.ptp else None,
            "offset_ms": self.offset_ms,
            "delay_ms": self.delay_ms,
            "warn_offset_ms": self.warn_offset_ms,
            "offset_exceeded": self.offset_exceeded,
            "read_error": self.error,
            "ntp_clients": list(self.ntp_clients),
            "chrony_installed": self.chrony_installed,
            "chrony_refclock": self.chrony_refclock,
            "chrony_source_state": self.chrony_source_state,
        }


# chronyc -c sources, column 2 (state) of a source
CHRONY_STATES = {"*": "selected", "+": "combined", "-": "not combined", "?": "unreachable",
                 "x": "falseticker", "~": "too variable"}


def chrony_source_state(runner: Runner) -> str | None:
    """State of chrony's PHC reference clock ("selected", "unreachable", ...),
    "not a source" when chronyd has none, None when chronyc gave no answer."""
    rc, out = runner(["chronyc", "-n", "-c", "sources"], 3.0)
    if rc != 0:
        return None
    for line in out.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0] == "#" and fields[2].upper().startswith("PHC"):
            return CHRONY_STATES.get(fields[1], fields[1])
    return "not a source"


def check(
    paths: Paths,
    *,
    warn_offset_ms: float = 100.0,
    opener: ClockOpener | None = None,
    samples: int = 5,
    runner: Runner | None = None,
) -> TimesyncStatus:
    """Find the host clock, measure the offset, look at chrony. ``opener``
    (default PhcClockSource) turns a /dev/ptpN path into a ClockSource;
    ``runner`` (default run_command) runs chronyc when chronyd runs."""
    ptp = find_hyperv_ptp(paths)
    st = TimesyncStatus(ptp, warn_offset_ms=warn_offset_ms)
    st.ntp_clients = running_ntp_clients(paths)
    chrony = read_chrony_config(paths)
    st.chrony_installed = chrony.main is not None
    refs = chrony.uses(ptp, paths)
    if refs:
        st.chrony_refclock = f"{refs[0].file}:{refs[0].line}"
        if "chronyd" in st.ntp_clients:
            st.chrony_source_state = chrony_source_state(runner or run_command)
    if ptp is None:
        return st
    try:
        source = (opener or PhcClockSource)(ptp.node)
    except OSError as exc:
        st.error = describe_read_error(exc)
        return st
    try:
        off = measure_offset(source, samples)
    except OSError as exc:
        st.error = describe_read_error(exc)
        return st
    finally:
        source.close()
    st.offset_ms = round(off.offset * 1000, 3)
    st.delay_ms = round(off.delay * 1000, 3)
    return st


# -- setup ------------------------------------------------------------------------


Runner = Callable[[list[str], float], tuple[int, str]]


def run_command(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run ``cmd`` with a time limit: (exit code, combined output); 124 on timeout."""
    # Children must not inherit NOTIFY_SOCKET: systemctl reports its own ERRNO= there.
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:g} s"
    except OSError as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


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


def _atomic_write(path: str, text: str) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    _atomic_write(dropin, "# Written by hvguestctl timesync setup: the Hyper-V host clock.\n"
                          f"{line}\n")
    if not systemd:
        return SetupResult(True, dropin, line,
                           f"wrote {dropin}; restart chronyd to use it (no systemd running)")
    unit = "chrony.service" if os.path.basename(os.path.dirname(chrony.main)) == "chrony" \
        else "chronyd.service"
    start = time.monotonic()
    rc, out = runner(["systemctl", "restart", unit], restart_timeout)
    if rc != 0:
        raise LocalUsageError(
            f"wrote {dropin}, but 'systemctl restart {unit}' failed ({rc}): {out or 'no output'}"
        )
    took = time.monotonic() - start
    return SetupResult(True, dropin, line, f"wrote {dropin} and restarted {unit} ({took:.1f} s)")
