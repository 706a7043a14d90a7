"""Host PTP clock discovery, offset measurement with a fake clock, chrony detection and setup."""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Sequence

import pytest

from hvguest.cli.main import main as hvguestctl
from hvguest.command import CommandResult, Runner
from hvguest.errors import LocalUsageError
from hvguest.paths import Paths
from hvguest.timesync import check as timesync
from hvguest.timesync import chrony
from hvguest.timesync import ptp as ptp_clock


class FakeClock:
    """Scripted (before, host, after) samples; raises ``error`` if set."""

    def __init__(self, samples: list[tuple[float, float, float]], error: int | None = None):
        self.samples = list(samples)
        self.error = error
        self.closed = False

    def sample(self) -> tuple[float, float, float]:
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]

    def close(self) -> None:
        self.closed = True


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_fd_to_clockid() -> None:
    assert ptp_clock.fd_to_clockid(3) == -29
    assert ptp_clock.fd_to_clockid(0) == -5


def test_clock_gettime_realtime_matches_time() -> None:
    assert abs(ptp_clock._clock_gettime(ptp_clock.CLOCK_REALTIME) - time.time()) < 1.0


def test_a_dynamic_clock_id_reaches_the_kernel() -> None:
    """The negative id of an open file is the kernel's to judge: a file that is no
    clock gives EINVAL as an OSError with its errno (how ESTALE reaches the caller)."""
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            ptp_clock._clock_gettime(ptp_clock.fd_to_clockid(fd))
    finally:
        os.close(fd)
    assert info.value.errno == errno.EINVAL


def test_reading_the_clock_needs_no_ctypes() -> None:
    import subprocess
    import sys

    code = "import sys, hvguest.timesync.ptp; print('ctypes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    assert out == "False"


def test_find_hyperv_ptp_among_others(machine: Callable[..., Paths]) -> None:
    paths = machine(ptp=False)
    _write(os.path.join(paths.sys, "class/ptp/ptp0/clock_name"), "KVM virtual PTP\n")
    assert ptp_clock.find_hyperv_ptp(paths) is None
    _write(os.path.join(paths.sys, "class/ptp/ptp1/clock_name"), "hyperv\n")
    _write(os.path.join(paths.dev, "ptp1"), "")
    ptp = ptp_clock.find_hyperv_ptp(paths)
    assert ptp is not None and ptp.name == "ptp1" and ptp.device == os.path.join(paths.dev, "ptp1")
    os.symlink("ptp1", os.path.join(paths.dev, "ptp_hyperv"))
    ptp = ptp_clock.find_hyperv_ptp(paths)
    assert ptp is not None and ptp.device == os.path.join(paths.dev, "ptp_hyperv")
    assert ptp.node == os.path.join(paths.dev, "ptp1")


def test_measure_offset_keeps_tightest_sample() -> None:
    clock = FakeClock([(100.0, 99.0, 100.2), (100.0, 99.95, 100.01), (100.0, 99.0, 100.5)])
    off = ptp_clock.measure_offset(clock, samples=3)
    assert off.delay == pytest.approx(0.01)
    assert off.offset == pytest.approx(0.055)


def test_check_reports_offset_and_limit(machine: Callable[..., Paths]) -> None:
    paths = machine()
    clock = FakeClock([(50.0, 49.75, 50.0)])
    st = timesync.check(paths, warn_offset_ms=100, opener=lambda dev: clock)
    assert st.offset_ms == pytest.approx(250.0) and st.offset_exceeded
    assert clock.closed
    st = timesync.check(paths, warn_offset_ms=500, opener=lambda dev: FakeClock([(1, 1, 1)]))
    assert st.offset_ms == 0 and not st.offset_exceeded
    assert st.as_dict()["ptp_clock"] == "ptp0"


def test_check_stale_host_sample(machine: Callable[..., Paths]) -> None:
    st = timesync.check(machine(), opener=lambda dev: FakeClock([], error=errno.ESTALE))
    assert st.offset_ms is None and st.error is not None and "600 s" in st.error


def test_check_without_timesync_channel(machine: Callable[..., Paths]) -> None:
    st = timesync.check(machine(omit=["timesync"]), opener=lambda dev: pytest.fail("opened"))
    assert st.ptp is None and st.offset_ms is None


DEBIAN_CONF = (
    "pool 2.debian.pool.ntp.org iburst\nconfdir /etc/chrony/conf.d\nsourcedir /run/chrony-dhcp\n"
)


def test_chrony_detection_debian_layout(machine: Callable[..., Paths]) -> None:
    paths = machine()
    _write(os.path.join(paths.os_etc, "chrony/chrony.conf"), DEBIAN_CONF)
    cfg = chrony.read_chrony_config(paths)
    ptp = ptp_clock.find_hyperv_ptp(paths)
    assert cfg.main is not None and cfg.uses(ptp, paths) == []
    _write(os.path.join(paths.os_etc, "chrony/conf.d/hyperv.conf"),
           "# host clock\nrefclock PHC /dev/ptp_hyperv poll 3 dpoll -2 offset 0\n")
    cfg = chrony.read_chrony_config(paths)
    refs = cfg.uses(ptp, paths)
    assert len(refs) == 1 and refs[0].line == 2
    assert refs[0].file.endswith("conf.d/hyperv.conf")


def test_chrony_detection_rhel_include_and_ptp_node(machine: Callable[..., Paths]) -> None:
    paths = machine()
    _write(os.path.join(paths.os_etc, "chrony.conf"),
           "server ntp.example.com\ninclude /etc/chrony.d/*.conf\n")
    _write(os.path.join(paths.os_etc, "chrony.d/phc.conf"), "refclock PHC /dev/ptp0:extpps\n")
    _write(os.path.join(paths.os_etc, "chrony.d/other.conf"), "#refclock PHC /dev/ptp0\n")
    cfg = chrony.read_chrony_config(paths)
    refs = cfg.uses(ptp_clock.find_hyperv_ptp(paths), paths)
    assert [os.path.basename(r.file) for r in refs] == ["phc.conf"]


def test_running_ntp_clients(machine: Callable[..., Paths]) -> None:
    paths = machine()
    _write(os.path.join(paths.proc, "412/comm"), "chronyd\n")
    _write(os.path.join(paths.proc, "413/comm"), "systemd-timesyn\n")
    _write(os.path.join(paths.proc, "414/comm"), "bash\n")
    assert chrony.running_ntp_clients(paths) == ["chronyd", "systemd-timesyncd"]


def test_chrony_source_state(machine: Callable[..., Paths]) -> None:
    def chronyc(out: str, rc: int = 0) -> Runner:
        return lambda cmd, timeout: CommandResult(rc, out)

    sources = "^,-,192.0.2.1,2,6,377,37,-0.000012,-0.000011,0.020\n" \
              "#,*,PHC0,0,3,377,7,0.000001,0.000001,0.000010\n"
    assert chrony.chrony_source_state(chronyc(sources)) == "selected"
    assert chrony.chrony_source_state(chronyc(sources.replace("#,*", "#,?"))) == "unreachable"
    assert chrony.chrony_source_state(chronyc(sources.splitlines()[0])) == "not a source"
    assert chrony.chrony_source_state(chronyc("", 1)) is None
    # Only asked when chronyd runs and a refclock reads the host clock.
    paths = machine()
    _write(os.path.join(paths.os_etc, "chrony/chrony.conf"),
           "refclock PHC /dev/ptp_hyperv poll 3 dpoll -2 offset 0\n")
    calls: list[list[str]] = []

    def runner(cmd: Sequence[str], timeout: float) -> CommandResult:
        calls.append(list(cmd))
        return CommandResult(0, sources)

    st = timesync.check(paths, opener=lambda dev: FakeClock([(1, 1, 1)]), runner=runner)
    assert st.chrony_refclock and st.chrony_source_state is None and calls == []
    _write(os.path.join(paths.proc, "412/comm"), "chronyd\n")
    st = timesync.check(paths, opener=lambda dev: FakeClock([(1, 1, 1)]), runner=runner)
    assert st.chrony_source_state == "selected" and calls[0][:2] == ["chronyc", "-n"]


class Recorder:
    def __init__(self, rc: int = 0, out: str = "") -> None:
        self.calls: list[tuple[list[str], float]] = []
        self.rc, self.out = rc, out

    def __call__(self, cmd: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append((list(cmd), timeout))
        return CommandResult(self.rc, self.out)


def test_setup_writes_dropin_and_restarts(machine: Callable[..., Paths]) -> None:
    paths = machine()
    _write(os.path.join(paths.os_etc, "chrony/chrony.conf"), DEBIAN_CONF)
    runner = Recorder()
    result = chrony.setup_chrony(paths, runner=runner, restart_timeout=7)
    assert result.changed
    dropin = os.path.join(paths.os_etc, "chrony/conf.d", chrony.DROPIN_NAME)
    with open(dropin) as f:
        text = f.read()
    # No udev link in the fixture: the node found is named.
    assert "refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0\n" in text
    assert oct(os.stat(dropin).st_mode & 0o777) == "0o644"
    assert not [n for n in os.listdir(os.path.dirname(dropin)) if n.endswith(".tmp")]
    assert runner.calls == [(["systemctl", "restart", "chrony.service"], 7)]
    # Second run: already configured, nothing restarted.
    again = chrony.setup_chrony(paths, runner=runner)
    assert not again.changed and "already configured" in again.message
    assert len(runner.calls) == 1


def test_setup_prefers_udev_link(machine: Callable[..., Paths]) -> None:
    paths = machine()
    os.symlink("ptp0", os.path.join(paths.dev, "ptp_hyperv"))
    _write(os.path.join(paths.os_etc, "chrony/chrony.conf"), DEBIAN_CONF)
    result = chrony.setup_chrony(paths, runner=Recorder(), systemd=False)
    assert result.line == "refclock PHC /dev/ptp_hyperv poll 3 dpoll -2 offset 0"
    assert "restart chronyd" in result.message


def test_setup_errors(machine: Callable[..., Paths]) -> None:
    paths = machine()
    with pytest.raises(LocalUsageError, match="not installed"):
        chrony.setup_chrony(paths, runner=Recorder())
    _write(os.path.join(paths.os_etc, "chrony.conf"), "server ntp.example.com\n")
    with pytest.raises(LocalUsageError, match="no drop-in directory"):
        chrony.setup_chrony(paths, runner=Recorder())
    os.unlink(os.path.join(paths.os_etc, "chrony.conf"))
    _write(os.path.join(paths.os_etc, "chrony/chrony.conf"), DEBIAN_CONF)
    with pytest.raises(LocalUsageError, match="failed \\(124\\)"):
        chrony.setup_chrony(paths, runner=Recorder(124, "timed out after 20 s"))
    with pytest.raises(LocalUsageError, match="Time Synchronization"):
        chrony.setup_chrony(machine(omit=["timesync"]), runner=Recorder())


def test_cli_timesync_status_and_setup(
    machine: Callable[..., Paths],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = machine()
    root = os.path.dirname(paths.sys)
    monkeypatch.setattr(ptp_clock, "PhcClockSource", lambda dev: FakeClock([(10.0, 9.9995, 10.0)]))
    assert hvguestctl(["timesync", "status", "--root-dir", root]) == 0
    out = capsys.readouterr().out
    assert "+0.500 ms" in out and "chrony:      not installed" in out
    assert hvguestctl(["timesync", "status", "--json", "--root-dir", root]) == 0
    assert json.loads(capsys.readouterr().out)["offset_ms"] == pytest.approx(0.5)
    monkeypatch.setattr(ptp_clock, "PhcClockSource", lambda dev: FakeClock([(10.0, 9.0, 10.0)]))
    assert hvguestctl(["timesync", "status", "--root-dir", root]) == 2
    assert "PAST THE LIMIT" in capsys.readouterr().out
    # setup without systemd as PID 1 (the fixture's): writes, does not restart.
    _write(os.path.join(paths.os_etc, "chrony/chrony.conf"), DEBIAN_CONF)
    assert hvguestctl(["timesync", "setup", "--root-dir", root]) == 0
    assert "wrote" in capsys.readouterr().out
    assert hvguestctl(["timesync", "setup", "--root-dir", root]) == 0
    assert "already configured" in capsys.readouterr().out
    assert hvguestctl(["timesync", "status", "--root-dir", root]) == 2
    assert "uses the host clock" in capsys.readouterr().out
    no_ts = machine(omit=["timesync"])
    assert hvguestctl(["timesync", "setup", "--root-dir", os.path.dirname(no_ts.sys)]) == 1
