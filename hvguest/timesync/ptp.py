"""The host's PTP clock: find it, read it, measure the guest clock's offset to it.

hv_utils registers a PTP clock named "hyperv" (``<sys>/class/ptp/ptpN/clock_name``).
Reading it gives the host's last time sample advanced by the partition
reference counter; the read fails with ESTALE when the host sent no sample for
600 s (time sync off on the host, or the VM was paused). The offset is measured
like phc2sys does: system clock before and after one PHC read, keeping the
sample with the shortest bracket.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hvguest.paths import Paths

PTP_NAME = "hyperv"
UDEV_LINK = "ptp_hyperv"  # systemd's udev rules add /dev/ptp_hyperv

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


def _clock_gettime(clockid: int) -> float:
    # time.clock_gettime hands any clock id to the kernel, dynamic (negative) ones
    # included: no ctypes, whose find_library pulls tempfile, shutil and random.
    return time.clock_gettime(clockid)


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


# Turns a /dev/ptpN path into a ClockSource (tests inject a fake clock).
ClockOpener = Callable[[str], ClockSource]


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
