"""The .deb in a Debian 12 VM under QEMU (software emulation) with the cloud kernel,
real udev and systemd. hvguest-sim inside the VM creates the Hyper-V devices as
CUSE character devices and plays the host; the guest script
(guest/vm-checks) checks that udev starts the units, that the host's KVP, VSS and
file copy requests are served, that hvguestctl status sees healthy daemons, that
removing the devices stops the units (BindsTo=), that upgrade, removal and a new
install behave, that SIGKILL of hvguest-vssd while / is frozen ends thawed, and that
the boot itself, with no device, left nothing waiting. In the same boot the .deb
then makes way for the .rpm (installed with its scriptlets), and the SIGKILL case
runs again against the .rpm's layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import e2elib
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
# guest/direct-checks: SSH over vsock with the .deb installed.
DIRECT_CHECKS = ("direct-off-by-default", "direct-ssh-login", "direct-scp-both-ways",
                 "direct-status", "direct-keys-from-host", "direct-disable-refuses")


def prepare_vm_root(root: Path, deb: Path, rpm: Path) -> None:
    shutil.copy(deb, root / "var/tmp/hvguest.deb")
    shutil.copy(e2elib.sim_package(deb), root / "var/tmp/hvguest-sim.deb")
    shutil.copy(rpm, root / "var/tmp/hvguest.rpm")
    shutil.copy(e2elib.sim_package(rpm), root / "var/tmp/hvguest-sim.rpm")
    e2elib.nspawn_run(root, ["dpkg", "-i", "/var/tmp/hvguest.deb", "/var/tmp/hvguest-sim.deb"])
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    # Results go to the serial console: no login prompt on it.
    masked = root / "etc/systemd/system/serial-getty@ttyS0.service"
    masked.unlink(missing_ok=True)
    masked.symlink_to("/dev/null")
    e2elib.install_check_unit(root, e2elib.GUEST / "vm-checks")
    lib = root / "usr/local/lib/e2e"
    lib.mkdir(parents=True, exist_ok=True)
    shutil.copy(e2elib.REPO / "tests/fixtures/sysfs/sysfs_builder.py", lib)
    for extra in e2elib.GUEST.glob("*.sh"):  # checks vm-checks sources
        shutil.copy(extra, lib)
    shutil.copy(e2elib.GUEST / "direct-checks", lib)
    shutil.copy(e2elib.GUEST / "dropin-checks", lib)


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"),
                    reason="needs qemu-system-x86_64 (apt-get install qemu-system-x86)")
@pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="needs mkfs.ext4 (e2fsprogs)")
def test_vm_udev_activation_and_host_operations(scratch_root: Path, deb: Path, rpm: Path,
                                                tmp_path: Path) -> None:
    prepare_vm_root(scratch_root, deb, rpm)
    kernel, initrd = e2elib.kernel_and_initrd(scratch_root)
    boot_files = tmp_path / "boot"
    boot_files.mkdir()
    shutil.copy(kernel, boot_files / "vmlinuz")
    shutil.copy(initrd, boot_files / "initrd.img")
    image = tmp_path / "vm.img"
    e2elib.make_image(scratch_root, image)
    shutil.rmtree(scratch_root)  # the image holds it now
    serial = tmp_path / "serial.log"
    try:
        # A hang bound only: software emulation on a busy 2-core machine runs the
        # whole script (sim start/stop three times, five package operations, a dozen
        # ssh logins over vsock) in up to ~15 min.
        boot = e2elib.qemu_boot(boot_files / "vmlinuz", boot_files / "initrd.img", image, serial,
                                timeout=1500)
    finally:
        image.unlink(missing_ok=True)
    checks = boot.checks()
    failed = sorted(name for name, result in checks.items() if result != "ok")
    report = "\n".join(line for line in boot.output.splitlines()
                       if line.startswith(("CHECK", "E2E_", "STATUS", "    ", "[", "---")))
    assert boot.returncode == 0 and not failed, (
        f"E2E_RC={boot.returncode}, failed {failed}\n{report[-12000:]}"
    )
    for name in ("boot-without-devices", "sim-devices-ignored-by-default",
                 "udev-started-units", "kvp-set-get",
                 "vss-freeze-thaw", "fcopy-copy", "fcopy-least-privilege", "fcopy-kernel-digest",
                 "status-healthy", "remove-stops-units",
                 "readd-starts-units", "upgrade-restarts", "remove-package",
                 "install-with-devices", "vss-sigkill-while-frozen", "install-rpm",
                 "rpm-vss-sigkill-while-frozen", "shutdown-hooks-armed"):
        assert checks.get(name) == "ok", (name, checks)
    assert checks.get("metrics-textfile") == "ok", checks  # guest/metrics-checks.sh
    for name in (*DIRECT_CHECKS, "lisa-verify-kvp", "lisa-style-vss", "lisa-style-fcopy",
                 "old-unit-names-act"):
        assert checks.get(name) == "ok", (name, checks)
    # The poweroff that ended the VM ran the pre-shutdown hook, told it was a poweroff.
    after = boot.output.split("E2E_RC=", 1)[-1]
    assert "E2E_SHUTDOWN_HOOK action=poweroff env=poweroff" in after, report[-3000:]
    print(report)  # shown with pytest -s or -rP: the timings and status lines
