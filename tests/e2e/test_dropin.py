"""hvguest as a drop-in for the distributions' Hyper-V daemons: package relations
(.deb against Debian's hyperv-daemons, .rpm against Fedora's hyperv-daemons,
hypervkvpd, hypervvssd, hypervfcopyd and hyperv-tools), the old unit names as
aliases in a booted system, and the migration from Debian's hyperv-daemons and
back in a QEMU guest with the simulated host."""

from __future__ import annotations

import shutil
from pathlib import Path

import e2elib
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ALIASES = {
    "hv-kvp-daemon": "kvp", "hypervkvpd": "kvp",
    "hv-vss-daemon": "vss", "hypervvssd": "vss",
    "hv-fcopy-daemon": "fcopy", "hypervfcopyd": "fcopy",
}
PROGRAMS = ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon", "hv_fcopy_uio_daemon",
            "hypervkvpd", "hypervvssd", "hypervfcopyd", "lsvmbus")
REPLACED_RPMS = ("hyperv-daemons", "hypervkvpd", "hypervvssd", "hypervfcopyd", "hyperv-tools")


def deb_field(deb: Path, name: str) -> str:
    return e2elib.run(["dpkg-deb", "-f", str(deb), name], timeout=60).stdout.strip()


def test_deb_replaces_hyperv_daemons(deb: Path) -> None:
    assert deb_field(deb, "Provides") == "hyperv-daemons (= 6.12)"
    assert deb_field(deb, "Conflicts") == "hyperv-daemons"
    assert deb_field(deb, "Replaces") == "hyperv-daemons"
    listing = e2elib.run(["dpkg-deb", "-c", str(deb)], timeout=60).stdout
    for program in PROGRAMS:
        assert f" ./usr/sbin/{program}\n" in listing, program
    for old, svc in ALIASES.items():
        assert f"./lib/systemd/system/{old}.service -> hvguest-{svc}.service" in listing


def test_rpm_obsoletes_the_distribution_packages(rpm: Path) -> None:
    provides = e2elib.run(["rpm", "-qp", "--provides", str(rpm)], timeout=60).stdout.split("\n")
    obsoletes = e2elib.run(["rpm", "-qp", "--obsoletes", str(rpm)], timeout=60).stdout.split("\n")
    for name in REPLACED_RPMS:
        # Obsoletes every version the distributions have (Fedora 6.x, RHEL 0-0.N) and
        # provides one above it: dnf replaces them and picks hvguest for their names.
        assert f"{name} = 99" in provides, provides
        assert f"{name} < 99" in obsoletes, obsoletes
    files = e2elib.run(["rpm", "-qpl", str(rpm)], timeout=60).stdout.split("\n")
    for program in PROGRAMS:
        assert f"/usr/sbin/{program}" in files, program
    for old in ALIASES:
        assert f"/usr/lib/systemd/system/{old}.service" in files
    # The aliases are symlinks to hvguest's units, not copies.
    dump = e2elib.run(["rpm", "-qp", "--dump", str(rpm)], timeout=60).stdout
    for old, svc in ALIASES.items():
        line = [ln for ln in dump.splitlines()
                if ln.startswith(f"/usr/lib/systemd/system/{old}.service ")][0]
        assert line.split()[-1] == f"hvguest-{svc}.service", line


def assert_checks(boot: e2elib.Boot, names: list[str]) -> None:
    checks = boot.checks()
    failed = sorted(name for name, result in checks.items() if result != "ok")
    assert boot.returncode == 0 and checks and not failed, (
        f"exit {boot.returncode}, failed {failed}\n{boot.failures()}\n--- tail\n"
        f"{boot.output[-4000:]}"
    )
    for name in names:
        assert checks.get(name) == "ok", (name, checks)


NSPAWN_CHECKS = [f"{kind}-{old}" for old in ALIASES for kind in ("verify", "alias", "scripts")]
NSPAWN_CHECKS += ["units-start-reference-names", "reference-programs", "mask-old-name",
                  "nothing-waiting"]


def test_old_unit_names_answer_deb(scratch_root: Path, deb: Path) -> None:
    shutil.copy(deb, scratch_root / "var/tmp/hvguest.deb")
    e2elib.nspawn_run(scratch_root, ["dpkg", "-i", "/var/tmp/hvguest.deb"])
    e2elib.install_check_unit(scratch_root, e2elib.GUEST / "dropin-nspawn-checks")
    assert_checks(e2elib.nspawn_boot(scratch_root), NSPAWN_CHECKS)


def test_old_unit_names_answer_rpm(scratch_root: Path, rpm: Path) -> None:
    e2elib.run(["rpm", "--root", str(scratch_root), "--initdb"], timeout=60)
    e2elib.run(["rpm", "--root", str(scratch_root), "-i", "--nodeps", str(rpm)], timeout=120)
    e2elib.install_check_unit(scratch_root, e2elib.GUEST / "dropin-nspawn-checks")
    assert_checks(e2elib.nspawn_boot(scratch_root), NSPAWN_CHECKS)


def prepare_migration_root(root: Path, deb: Path, old: Path) -> None:
    for src, name in ((deb, "hvguest.deb"), (e2elib.sim_package(deb), "hvguest-sim.deb"),
                      (old, "hyperv-daemons.deb")):
        shutil.copy(src, root / "var/tmp" / name)
    # The simulator's package depends on hvguest, which replaces hyperv-daemons: the
    # guest runs the simulator from both packages' files unpacked aside.
    for name in ("hvguest.deb", "hvguest-sim.deb"):
        e2elib.run(["dpkg-deb", "-x", str(root / "var/tmp" / name), str(root / "opt/e2e-sim")],
                   timeout=60)
    e2elib.nspawn_run(root, ["dpkg", "-i", "/var/tmp/hyperv-daemons.deb"])
    # What an administrator of the old package may have done: enable its units.
    e2elib.nspawn_run(root, ["systemctl", "enable", "hv-kvp-daemon.service",
                             "hv-vss-daemon.service", "hv-fcopy-daemon.service"])
    # Debian's units bind to hv_utils' misc devices; the simulator's are CUSE
    # devices of the same names (/dev/vmbus/hv_kvp...): bind to those instead.
    for svc in ("kvp", "vss", "fcopy"):
        unit = root / f"lib/systemd/system/hv-{svc}-daemon.service"
        text = unit.read_text()
        lines = [f"BindsTo=dev-vmbus-hv_{svc}.device" if ln.startswith("BindsTo=") else ln
                 for ln in text.splitlines()]
        unit.write_text("\n".join(lines) + "\n")
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    masked = root / "etc/systemd/system/serial-getty@ttyS0.service"
    masked.unlink(missing_ok=True)
    masked.symlink_to("/dev/null")
    e2elib.install_check_unit(root, e2elib.GUEST / "dropin-migration")


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"),
                    reason="needs qemu-system-x86_64 (apt-get install qemu-system-x86)")
def test_migration_from_hyperv_daemons_and_back(scratch_root: Path, deb: Path,
                                                hyperv_daemons_deb: Path,
                                                tmp_path: Path) -> None:
    prepare_migration_root(scratch_root, deb, hyperv_daemons_deb)
    kernel, initrd = e2elib.kernel_and_initrd(scratch_root)
    boot_files = tmp_path / "boot"
    boot_files.mkdir()
    shutil.copy(kernel, boot_files / "vmlinuz")
    shutil.copy(initrd, boot_files / "initrd.img")
    image = tmp_path / "vm.img"
    e2elib.make_image(scratch_root, image)
    shutil.rmtree(scratch_root)
    try:
        boot = e2elib.qemu_boot(boot_files / "vmlinuz", boot_files / "initrd.img", image,
                                tmp_path / "serial.log", timeout=900)
    finally:
        image.unlink(missing_ok=True)
    report = "\n".join(line for line in boot.output.splitlines()
                       if line.startswith(("CHECK", "E2E_", "    ", "[qemu")))
    checks = boot.checks()
    failed = sorted(name for name, result in checks.items() if result != "ok")
    assert boot.returncode == 0 and not failed, (
        f"E2E_RC={boot.returncode}, failed {failed}\n{report[-8000:]}")
    for name in ("old-daemons-serve", "apt-install-replaces", "hvguest-holds-the-device",
                 "old-names-answer", "pool-values-kept", "nothing-left-behind",
                 "remove-and-reinstall-hyperv-daemons"):
        assert checks.get(name) == "ok", (name, checks)
    print(report)
