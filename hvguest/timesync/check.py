"""Time sync status: the host clock, the guest clock's offset to it, and who uses it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hvguest.command import Runner, run_command
from hvguest.paths import Paths
from hvguest.timesync import ptp as ptp_clock
from hvguest.timesync.chrony import chrony_source_state, read_chrony_config, running_ntp_clients
from hvguest.timesync.ptp import ClockOpener, PtpClock, describe_read_error, measure_offset


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
    ptp = ptp_clock.find_hyperv_ptp(paths)
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
        source = (opener or ptp_clock.PhcClockSource)(ptp.node)
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
