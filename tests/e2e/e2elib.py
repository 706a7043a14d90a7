"""Root filesystems, packages, systemd-nspawn and QEMU for the end-to-end tests.

Every external command runs under ``timeout`` with stdin from /dev/null; every
machine gets a unique name and its /run/systemd/nspawn leftovers are removed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUEST = Path(__file__).resolve().parent / "guest"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# What the packages need at run time, plus a kernel, udev and systemd for the VM.
ROOTFS_PACKAGES = (
    "systemd,systemd-sysv,dbus,udev,kmod,python3,python3-systemd,"
    "python3-yaml,python3-pyroute2,iproute2,e2fsprogs,linux-image-cloud-amd64,initramfs-tools,"
    "python3-prometheus-client,"
    # rpm: the boot test installs the .rpm too, with its scriptlets, inside the VM.
    "rpm"
    # procps: pgrep, as Microsoft's validation suite runs it (tests/e2e/guest/dropin-checks).
    ",procps"
)
ROOTFS_PACKAGES += ",openssh-server,socat"  # SSH over vsock: guest/direct-checks


class CommandFailed(AssertionError):
    pass


def run(args: Sequence[str], *, timeout: float, check: bool = True,
        env: dict[str, str] | None = None, cwd: str | Path | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """Run ``args`` under timeout(1), stdin /dev/null, output captured as text."""
    full_env = {**os.environ, "PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8", **(env or {})}
    full_env.pop("PYTHONPATH", None)
    full_env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        ["timeout", "-k", "10", str(int(timeout)), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
        env=full_env, cwd=cwd, check=False,
    )
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def debian_mirror() -> str:
    """The machine's own Debian mirror (deb822 sources or sources.list), else deb.debian.org."""
    candidates = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def debootstrap(target: Path) -> None:
    """A minimal Debian 12 with systemd, udev, the Python dependencies and a cloud kernel."""
    run(["debootstrap", "--variant=minbase", f"--include={ROOTFS_PACKAGES}", "bookworm",
         str(target), debian_mirror()], timeout=900)
    apt_cache = target / "var/cache/apt/archives"
    for deb in apt_cache.glob("*.deb"):
        deb.unlink()
    (target / "etc/hostname").write_text("hvguest-e2e\n")
    hosts = "127.0.0.1 localhost\n127.0.1.1 hvguest-e2e\n::1 localhost ip6-localhost\n"
    (target / "etc/hosts").write_text(hosts)


def copy_tree(src: Path, dst: Path) -> None:
    run(["cp", "-a", "--", str(src), str(dst)], timeout=300)


def build_deb(out: Path) -> Path:
    proc = run([str(REPO / "packaging/build-deb"), str(out)], timeout=600)
    return Path(proc.stdout.strip().splitlines()[-1])


def sim_package(package: Path) -> Path:
    """The hvguest-sim package built next to the hvguest one (.deb or .rpm)."""
    if package.suffix == ".deb":
        return package.with_name(package.name.replace("hvguest_", "hvguest-sim_", 1))
    return package.with_name(package.name.replace("hvguest-", "hvguest-sim-", 1))


def build_rpm(out: Path) -> Path:
    proc = run([str(REPO / "packaging/build-rpm"), str(out)], timeout=600)
    return Path(proc.stdout.strip().splitlines()[-1])


# -- systemd-nspawn -----------------------------------------------------------------


@dataclass
class Boot:
    returncode: int
    output: str

    def checks(self) -> dict[str, str]:
        """"CHECK name ok|FAIL" lines of the guest's check script."""
        return dict(re.findall(r"CHECK (\S+) (ok|FAIL)", self.output))

    def failures(self) -> str:
        lines = self.output.splitlines()
        keep = [ln for ln in lines if "CHECK" in ln and "FAIL" in ln or ln.startswith("    ")
                or re.search(r"\]: {4}", ln)]
        return "\n".join(keep[-200:])


def _machine() -> str:
    return f"hvguest-e2e-{uuid.uuid4().hex[:8]}"


def _cleanup_nspawn(machine: str) -> None:
    shutil.rmtree(f"/run/systemd/nspawn/propagate/{machine}", ignore_errors=True)
    for leftover in Path("/run/systemd/nspawn/locks").glob(f"*{machine}*"):
        leftover.unlink(missing_ok=True)


def nspawn_run(root: Path, args: Sequence[str], *, timeout: float = 300,
               binds: Sequence[tuple[Path, str]] = ()) -> subprocess.CompletedProcess[str]:
    """Run one command in the root filesystem (no init)."""
    machine = _machine()
    bind_args = [f"--bind-ro={src}:{dst}" for src, dst in binds]
    try:
        return run(["systemd-nspawn", "-q", "-D", str(root), "-M", machine, "--register=no",
                    "--keep-unit", *bind_args, "--", *args], timeout=timeout)
    finally:
        _cleanup_nspawn(machine)


def install_check_unit(root: Path, script: Path) -> None:
    """Run ``script`` once multi-user.target is reached, on every boot of ``root``."""
    shutil.copy(script, root / "usr/local/sbin/e2e-checks")
    os.chmod(root / "usr/local/sbin/e2e-checks", 0o755)
    unit = root / "etc/systemd/system/e2e-check.service"
    unit.write_text(
        "[Unit]\nDescription=hvguest end-to-end checks\nAfter=multi-user.target\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/local/sbin/e2e-checks\n"
        "StandardOutput=journal+console\nStandardError=journal+console\n"
        "TimeoutStartSec=infinity\n"
    )
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "e2e-check.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/e2e-check.service")


def nspawn_boot(root: Path, *, timeout: float = 300) -> Boot:
    """Boot ``root`` with its systemd as PID 1 until the check unit ends it
    (``systemctl exit N`` makes nspawn exit N)."""
    machine = _machine()
    try:
        proc = run(["systemd-nspawn", "-q", "-D", str(root), "-M", machine, "--register=no",
                    "--keep-unit", "-b"], timeout=timeout, check=False)
    finally:
        _cleanup_nspawn(machine)
    return Boot(proc.returncode, proc.stdout + proc.stderr)


# -- QEMU ---------------------------------------------------------------------------


def kernel_and_initrd(root: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise CommandFailed(f"no kernel in {root}/boot")
    kernel = kernels[-1]
    initrd = root / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-")
    return kernel, initrd


def make_image(root: Path, image: Path, size_mb: int = 2048) -> None:
    """An ext4 image of ``root`` (mkfs.ext4 -d: no loop device, no mount)."""
    with open(image, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    run(["mkfs.ext4", "-q", "-F", "-L", "e2eroot", "-d", str(root), str(image)], timeout=300)


def qemu_boot(kernel: Path, initrd: Path, image: Path, serial_log: Path, *,
              timeout: float = 480, nic: str = "none", smp: int = 2, append: str = "") -> Boot:
    """Boot the image under QEMU's software emulation; the guest powers off when its
    checks are done (``-no-reboot`` turns a panic or reboot into an exit too).
    ``nic``: QEMU's -nic value; ``append``: more kernel command line."""
    start = time.monotonic()
    proc = run([
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", str(smp), "-m", "2048",
        "-nographic", "-no-reboot", "-nic", nic, "-monitor", "none",
        "-serial", f"file:{serial_log}",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=0 quiet"
        + (f" {append}" if append else ""),
        "-drive", f"file={image},if=virtio,format=raw",
    ], timeout=timeout, check=False)
    text = serial_log.read_text(errors="replace") if serial_log.exists() else ""
    text += f"\n[qemu exit {proc.returncode} after {time.monotonic() - start:.0f}s]\n"
    text += proc.stdout + proc.stderr
    m = re.search(r"^E2E_RC=(\d+)", text, re.M)
    return Boot(int(m.group(1)) if m else -1, text)
