"""The built .deb and .rpm installed into a fresh Debian 12 root filesystem and
booted with systemd-nspawn: units verify in place, rules load, the CLI runs, the
packaged configuration validates, nothing waits for a Hyper-V device."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import e2elib
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UNITS = ("hvguest-kvp", "hvguest-vss", "hvguest-fcopy", "hvguest-heartbeat",
         "hvguest-shutdown-hooks", "hvguest-metrics")

# "systemd-analyze security" exposure (0 = locked down, 10 = unrestricted) may not
# get worse than these figures, measured in this boot (Debian 12, systemd 252);
# docs/install.md gives each figure's reason.
MAX_EXPOSURE = {
    "hvguest-kvp": 2.7,
    "hvguest-vss": 5.6,
    "hvguest-fcopy": 1.9,  # 1.7 before AF_ALG (the kernel's SHA-256) was allowed
    "hvguest-heartbeat": 1.3,
    "hvguest-shutdown-hooks": 6.0,
    "hvguest-metrics": 3.7,
}


def exposure(output: str) -> dict[str, float]:
    found = re.findall(r"Overall exposure level for (\S+)\.service: ([0-9.]+)", output)
    return {unit: float(level) for unit, level in found}


def assert_booted_checks(boot: e2elib.Boot) -> None:
    checks = boot.checks()
    failed = sorted(name for name, result in checks.items() if result != "ok")
    assert boot.returncode == 0 and checks and not failed, (
        f"nspawn exit {boot.returncode}, failed checks {failed}\n{boot.failures()}\n"
        f"--- tail\n{boot.output[-4000:]}"
    )
    for unit in UNITS:
        assert checks.get(f"verify-{unit}.service") == "ok", checks
    for unit in ("hvguest-metrics.timer", "hvguest-metrics.path"):
        assert checks.get(f"verify-{unit}") == "ok", checks
    # A broken configuration leaves each daemon's unit failed after one report.
    for daemon in ("kvp", "vss", "fcopy", "heartbeat"):
        assert checks.get(f"config-error-{daemon}") == "ok", checks
    assert checks.get("fcopy-bind-helper") == "ok", checks
    levels = exposure(boot.output)
    print("exposure:", levels)  # shown with pytest -s or -rP
    for unit in UNITS:
        assert unit in levels, f"no security figure for {unit}\n{boot.output[-3000:]}"
        assert levels[unit] <= MAX_EXPOSURE[unit], (unit, levels[unit])


def test_deb_installs_and_boots(scratch_root: Path, deb: Path) -> None:
    shutil.copy(deb, scratch_root / "var/tmp/hvguest.deb")
    shutil.copy(e2elib.sim_package(deb), scratch_root / "var/tmp/hvguest-sim.deb")
    e2elib.nspawn_run(scratch_root, ["dpkg", "-i", "/var/tmp/hvguest.deb",
                                     "/var/tmp/hvguest-sim.deb"])
    e2elib.install_check_unit(scratch_root, e2elib.GUEST / "nspawn-checks")
    boot = e2elib.nspawn_boot(scratch_root)
    assert_booted_checks(boot)

    # Removal takes the units and rules away and leaves the pools alone.
    pool = scratch_root / "var/lib/hyperv/.kvp_pool_0"
    pool.parent.mkdir(parents=True, exist_ok=True)
    pool.write_bytes(b"k" * 2560)
    e2elib.nspawn_run(scratch_root, ["dpkg", "-r", "hvguest-sim", "hvguest"])
    assert not (scratch_root / "lib/systemd/system/hvguest-kvp.service").exists()
    assert not (scratch_root / "lib/udev/rules.d/60-hvguest.rules").exists()
    assert pool.read_bytes() == b"k" * 2560
    # The configuration is a conffile: kept until purge.
    assert (scratch_root / "etc/hvguest/hvguest.yaml").exists()


def test_rpm_installs_and_boots(scratch_root: Path, rpm: Path) -> None:
    # The root filesystem is Debian: its packages are not in an rpm database, so
    # the dependencies (installed by debootstrap) cannot be resolved by rpm.
    e2elib.run(["rpm", "--root", str(scratch_root), "--initdb"], timeout=60)
    e2elib.run(["rpm", "--root", str(scratch_root), "-i", "--nodeps", str(rpm),
                str(e2elib.sim_package(rpm))], timeout=120)
    e2elib.install_check_unit(scratch_root, e2elib.GUEST / "nspawn-checks")
    boot = e2elib.nspawn_boot(scratch_root)
    assert_booted_checks(boot)

    pool = scratch_root / "var/lib/hyperv/.kvp_pool_0"
    pool.parent.mkdir(parents=True, exist_ok=True)
    pool.write_bytes(b"r" * 2560)
    e2elib.run(["rpm", "--root", str(scratch_root), "-e", "hvguest-sim", "hvguest"],
               timeout=120)
    assert not (scratch_root / "usr/lib/systemd/system/hvguest-kvp.service").exists()
    assert not (scratch_root / "usr/lib/hvguest/python").exists()
    assert pool.read_bytes() == b"r" * 2560


def _is_sim(path: str) -> bool:
    return "/hvguest/sim/" in path or path.endswith(("/hvguest/sim", "/hvguest-sim")) or (
        "/man8/hvguest-sim.8" in path
    )


def test_production_packages_hold_no_simulator(deb: Path, rpm: Path, tmp_path: Path) -> None:
    """The simulator (which can play a host to the installed daemons) ships only in
    hvguest-sim, which depends on exactly this hvguest."""
    deb_files = e2elib.run(["dpkg-deb", "-c", str(deb)], timeout=60).stdout.splitlines()
    deb_files = [line.split()[-1] for line in deb_files]
    assert deb_files and not [f for f in deb_files if _is_sim(f)]
    payload = tmp_path / "deb"
    e2elib.run(["dpkg-deb", "-x", str(deb), str(payload)], timeout=60)
    (entry_points,) = payload.glob("usr/lib/python3/dist-packages/hvguest-*/entry_points.txt")
    assert "hvguestctl" in entry_points.read_text()
    assert "hvguest-sim" not in entry_points.read_text()
    sim_deb = e2elib.sim_package(deb)
    sim_files = e2elib.run(["dpkg-deb", "-c", str(sim_deb)], timeout=60).stdout
    assert "./usr/bin/hvguest-sim" in sim_files and "/hvguest/sim/server.py" in sim_files
    assert "/hvguest/vss/" not in sim_files and "/usr/bin/hvguestctl" not in sim_files
    depends = e2elib.run(["dpkg-deb", "-f", str(sim_deb), "Depends"], timeout=60).stdout
    version = e2elib.run(["dpkg-deb", "-f", str(deb), "Version"], timeout=60).stdout.strip()
    assert f"hvguest (= {version})" in depends

    rpm_files = e2elib.run(["rpm", "-qpl", str(rpm)], timeout=60).stdout.splitlines()
    assert rpm_files and not [f for f in rpm_files if _is_sim(f)]
    sim_rpm = e2elib.sim_package(rpm)
    sim_rpm_files = e2elib.run(["rpm", "-qpl", str(sim_rpm)], timeout=60).stdout.splitlines()
    assert "/usr/bin/hvguest-sim" in sim_rpm_files
    assert "/usr/lib/hvguest/python/hvguest/sim/server.py" in sim_rpm_files
    assert not [f for f in sim_rpm_files if not _is_sim(f)]
    requires = e2elib.run(["rpm", "-qpR", str(sim_rpm)], timeout=60).stdout
    evr = e2elib.run(["rpm", "-qp", "--qf", "%{VERSION}-%{RELEASE}", str(rpm)],
                     timeout=60).stdout.strip()
    assert f"hvguest = {evr}" in requires
