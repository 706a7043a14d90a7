"""Guest images for the network-stack boot tier: the session's Debian 12 root
filesystem, one real network stack installed from Debian's packages and configured
the way a real image is (DHCP on the NIC), and hvguest's .deb.

Only three things in an image are the test's own: the scenario script run at boot
(guest/net-scenario), Debian's reference hv_kvp_daemon unpacked aside (the oracle for
GET_IP_INFO's bytes), and a wrapper in /usr/local/sbin (first in systemd's PATH)
around the stack's activating command, which runs the real command and then fails
it whenever the configuration being applied holds ``REJECTED_ADDRESS``: the stack's
refusal of a profile, made deterministic, with the refused settings really applied
first so that the roll-back has a live change to undo.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import e2elib

GUID = "9c1b4a3e-6f2d-4e8a-b5c7-0d1e2f3a4b5c"
MAC = "00:15:5d:0e:2e:01"  # Hyper-V's OUI
REJECTED_ADDRESS = "10.0.2.66"

# Debian 12 packages per stack (without recommends), with ping for the checks.
PACKAGES = {
    "networkd": ["systemd-resolved", "iputils-ping"],
    "networkmanager": ["network-manager", "iputils-ping"],
    "netplan": ["netplan.io", "systemd-resolved", "iputils-ping"],
    "ifupdown": ["ifupdown", "isc-dhcp-client", "resolvconf", "iputils-ping"],
}
# The tool and the subcommand that makes a stack activate a configuration.
ACTIVATE = {
    "networkd": ("networkctl", "reconfigure"),
    "networkmanager": ("nmcli", "connection up"),
    # hvguest runs "netplan generate", then networkd's own reload and reconfigure.
    "netplan": ("networkctl", "reconfigure"),
    "ifupdown": ("ifup", ""),
}
CONFIG_DIRS = ("/etc/systemd/network /etc/NetworkManager/system-connections /etc/netplan"
               " /etc/network/interfaces.d")
# A few of the adversarial corpus's hostile suffixes, one per field.
HOSTILE_PICKS = (
    ("ip_addr", "newline"), ("dns_addr", "crlf-section"), ("gate_way", "command-substitution"),
    ("sub_net", "yaml-flow"), ("adapter_id", "zone-whole"), ("dns_addr", "line-separator"),
    ("ip_addr", "zone"),
)
STATIC_FIELDS = {"ip_addr": "10.0.2.50;10.0.2.51;fec0::50",
                 "sub_net": "255.255.255.0;255.255.255.0;64",
                 "gate_way": "10.0.2.2", "dns_addr": "10.0.2.3;192.0.2.53",
                 "adapter_id": "{" + GUID + "}"}


def hostile_cases() -> list[dict[str, str]]:
    """The picked cases from tests/adversarial's SET_IP_INFO corpus, on this guest's
    valid static values."""
    path = e2elib.REPO / "tests/adversarial/test_set_ip_info_injection.py"
    spec = importlib.util.spec_from_file_location("set_ip_info_corpus", path)
    assert spec and spec.loader
    corpus = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # its own helper modules
    try:
        spec.loader.exec_module(corpus)
    finally:
        sys.path.remove(str(path.parent))
    cases = []
    for field, label in HOSTILE_PICKS:
        if label == "zone-whole":
            value = corpus.WHOLE[field]  # type: ignore[attr-defined]
        else:
            value = STATIC_FIELDS[field] + corpus.SUFFIXES[label]  # type: ignore[attr-defined]
        cases.append({"field": field, "label": label, "value": value})
    return cases


def write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def enable(root: Path, unit: str, target: str = "multi-user.target") -> None:
    wants = root / f"etc/systemd/system/{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    if not link.is_symlink():
        link.symlink_to(f"/lib/systemd/system/{unit}")


def configure_stack(root: Path, stack: str) -> None:
    """DHCP on the NIC, as the stack's own image would have it."""
    if stack in ("networkd", "netplan"):
        enable(root, "systemd-networkd.service")
        enable(root, "systemd-resolved.service")
        resolv = root / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    if stack == "networkd":
        write(root, "etc/systemd/network/50-e2e-dhcp.network",
              "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n")
    elif stack == "netplan":
        write(root, "etc/netplan/50-e2e.yaml",
              "network:\n  version: 2\n  renderer: networkd\n"
              "  ethernets:\n    eth0:\n      dhcp4: true\n", 0o600)
    elif stack == "ifupdown":
        write(root, "etc/network/interfaces",
              "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
              "allow-hotplug eth0\niface eth0 inet dhcp\n")
    # NetworkManager: its own "Wired connection 1" (DHCP) for the NIC, keyfile plugin.


def fault_wrapper(stack: str) -> str:
    tool, sub = ACTIVATE[stack]
    pattern = f'*" {sub} "*' if sub else "*"
    return f"""#!/bin/sh
# Test image only: run the real {tool}, then fail "{tool} {sub}" when the
# configuration being applied holds {REJECTED_ADDRESS} (a profile the stack refuses).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
{tool} "$@"
rc=$?
case " $* " in
    {pattern})
        if grep -rqsF '{REJECTED_ADDRESS}' {CONFIG_DIRS}; then
            echo "{tool}: profile with {REJECTED_ADDRESS} refused (test image)" >&2
            exit 1
        fi ;;
esac
exit $rc
"""


def unpack_reference(root: Path, reference: Path) -> None:
    """Debian's hyperv-daemons unpacked, not installed (hvguest replaces it): the
    reference hv_kvp_daemon in /opt/reference, and its GET_IP_INFO scripts where it
    runs them from (/usr/libexec/hypervkvpd, a path hvguest does not ship)."""
    target = root / "opt/reference"
    e2elib.run(["dpkg-deb", "-x", str(reference), str(target)], timeout=60)
    scripts = root / "usr/libexec/hypervkvpd"
    scripts.mkdir(parents=True, exist_ok=True)
    for script in (target / "usr/libexec/hypervkvpd").iterdir():
        shutil.copy2(script, scripts / script.name)


def build_root(rootfs: Path, root: Path, stack: str, debs: list[Path], reference: Path) -> None:
    """A copy of the session's root filesystem made into ``stack``'s guest."""
    e2elib.copy_tree(rootfs, root)
    for deb in debs:
        shutil.copy(deb, root / "var/tmp" / deb.name)
    # The mirror debootstrap used is in the copy's sources.list.
    e2elib.nspawn_run(root, ["apt-get", "update", "-q"], timeout=600)
    e2elib.nspawn_run(root, ["sh", "-c",
                             "DEBIAN_FRONTEND=noninteractive apt-get install -y -q"
                             " --no-install-recommends " + " ".join(PACKAGES[stack])
                             + " && apt-get clean"], timeout=900)
    e2elib.nspawn_run(root, ["dpkg", "-i", *(f"/var/tmp/{d.name}" for d in debs)])
    configure_stack(root, stack)
    unpack_reference(root, reference)
    # The guest is emulated (TCG), many times slower than hardware: NetworkManager's
    # activation of a static profile took more than the ~8.5 s share of the default
    # 20 s deadline. The kernel waits 30 s; take what the setting allows.
    with open(root / "etc/hvguest/hvguest.yaml", "a") as f:
        f.write("\nkvp:\n  apply_timeout: 28\n")
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    masked = root / "etc/systemd/system/serial-getty@ttyS0.service"
    masked.unlink(missing_ok=True)
    masked.symlink_to("/dev/null")
    write(root, f"usr/local/sbin/{ACTIVATE[stack][0]}", fault_wrapper(stack), 0o755)
    write(root, "etc/e2e-net/config.json", json.dumps({
        "stack": stack, "guid": GUID, "mac": MAC, "hostile": hostile_cases(),
    }, indent=1))
    e2elib.install_check_unit(root, e2elib.GUEST / "net-scenario")
