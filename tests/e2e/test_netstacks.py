"""SET_IP_INFO and GET_IP_INFO against real network stacks, in QEMU guests.

One guest per stack (systemd-networkd with resolved, NetworkManager with its keyfile
plugin, netplan rendering to networkd, ifupdown with resolvconf), each the session's
Debian 12 root filesystem with the stack's own Debian packages, DHCP on its NIC as a
real image has it, and hvguest's .deb. The NIC is
QEMU's user-mode network (``-nic user``: a DHCP server and DNS on 10.0.2.x inside
QEMU, no traffic leaves the machine). hvguest-sim inside the guest plays the host
through a CUSE /dev/vmbus/hv_kvp, and udev starts the installed hvguest-kvpd under
its real unit and sandbox. guest/net-scenario runs the scenario, across one reboot
(the image is booted twice): DHCP lease seen by GET_IP_INFO; hostile strings from
the adversarial corpus refused, nothing changed; a static configuration (two IPv4
addresses, a gateway, two DNS servers, one IPv6 address) that ``ip -j addr``,
``ip -j route`` and the stack's resolver show exactly; a push the stack fails rolled
back to the working configuration within the kernel's window; after the reboot the
static configuration still there, then back to DHCP with a lease again; GET_IP_INFO
checked against the kernel and the resolver in every state.

The NIC's VMBus identity. On Hyper-V the NIC is an hv_netvsc device on the VMBus:
``/sys/class/net/<nic>/device`` is the VMBus device's directory, and its
``device_id`` file holds the adapter's instance GUID in braces -- the adapter id the
host names in SET_IP_INFO, which hvguest-kvpd matches by reading exactly that file.
QEMU's virtio NIC has no such file, and there is no VMBus under QEMU, so the guest
puts one there before the daemon starts: an overlay over the NIC's device directory
adds ``device_id`` (the real ``net/`` subdirectory is bound back on top so writes to
the interface's own files still reach the kernel). The daemon and the stack's tools
it runs see the same sysfs layout as on Hyper-V; nothing in hvguest is told it is
under test.

The stack's refusal of a profile is made deterministic by a wrapper around its
activating command in the test image (tests/e2e/netimages.py says how).
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import e2elib
import netimages
import pytest

pytestmark = [
    pytest.mark.e2e, pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("qemu-system-x86_64"),
                       reason="needs qemu-system-x86_64 (apt-get install qemu-system-x86)"),
    pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="needs mkfs.ext4 (e2fsprogs)"),
]

# HVGUEST_E2E_NETSTACKS=networkd,ifupdown runs only those.
STACKS = tuple(os.environ.get("HVGUEST_E2E_NETSTACKS",
                              "networkd,networkmanager,netplan,ifupdown").split(","))
PHASE_CHECKS = {
    1: ("p1-sim-started", "p1-dhcp-lease", "p1-get-ip-info-dhcp", "p1-reference-agrees-dhcp",
        "p1-hostile-refused", "p1-static-applied", "p1-get-ip-info-static",
        "p1-reference-agrees-static", "p1-rollback",
        "p1-get-ip-info-after-rollback"),
    2: ("p2-sim-started", "p2-static-survived-reboot", "p2-get-ip-info-static",
        "p2-back-to-dhcp", "p2-get-ip-info-dhcp"),
}


def run_stack(rootfs: Path, deb: Path, reference: Path, work: Path, stack: str
              ) -> list[e2elib.Boot]:
    """Build ``stack``'s guest and boot it twice (the scenario reboots in between)."""
    root = work / "root"
    started = time.monotonic()
    netimages.build_root(rootfs, root, stack, [deb, e2elib.sim_package(deb)], reference)
    kernel, initrd = e2elib.kernel_and_initrd(root)
    shutil.copy(kernel, work / "vmlinuz")
    shutil.copy(initrd, work / "initrd.img")
    image = work / "vm.img"
    e2elib.make_image(root, image)
    shutil.rmtree(root)
    built = time.monotonic()
    boots = []
    try:
        for phase in (1, 2):
            boot = e2elib.qemu_boot(
                work / "vmlinuz", work / "initrd.img", image, work / f"serial-{phase}.log",
                timeout=900, smp=1, append="net.ifnames=0",
                nic=f"user,model=virtio-net-pci,mac={netimages.MAC}")
            boots.append(boot)
            if boot.returncode < 0:
                break  # no verdict from the guest: the second boot would only repeat it
    finally:
        image.unlink(missing_ok=True)
    boots[0].output += f"\n[{stack}: image built in {built - started:.0f}s]\n"
    return boots


@pytest.fixture(scope="module")
def stack_boots(rootfs: Path, deb: Path, hyperv_daemons_deb: Path,
                tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, list[e2elib.Boot] | BaseException]:
    """Every stack's boots, two stacks at a time (the CI machine has two cores)."""
    results: dict[str, list[e2elib.Boot] | BaseException] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {stack: pool.submit(run_stack, rootfs, deb, hyperv_daemons_deb,
                                      tmp_path_factory.mktemp(f"net-{stack}"), stack)
                   for stack in STACKS}
        for stack, future in futures.items():
            try:
                results[stack] = future.result()
            except Exception as exc:  # noqa: BLE001 - reported by that stack's test
                results[stack] = exc
    return results


@pytest.mark.parametrize("stack", STACKS)
def test_ip_injection_on_real_stack(stack: str,
                                    stack_boots: dict[str, list[e2elib.Boot] | BaseException]
                                    ) -> None:
    result = stack_boots[stack]
    if isinstance(result, BaseException):
        raise result
    report = []
    for phase, boot in enumerate(result, 1):
        checks = boot.checks()
        lines = [ln for ln in boot.output.splitlines()
                 if ln.startswith(("CHECK", "E2E_", "    ", "[", "---"))]
        report.append(f"--- boot {phase}\n" + "\n".join(lines)[-8000:])
        failed = sorted(name for name, verdict in checks.items() if verdict != "ok")
        assert boot.returncode == 0 and not failed, (
            f"{stack} boot {phase}: E2E_RC={boot.returncode}, failed {failed}\n"
            + "\n".join(report))
        for name in PHASE_CHECKS[phase]:
            assert checks.get(name) == "ok", (stack, phase, name, "\n".join(report))
    assert len(result) == 2, "\n".join(report)
    print("\n".join(report))
