"""The packaged direct-access units as systemd reads them: listening on vsock port 22
for any CID, one sshd -i per connection, not enabled by the packages."""

from __future__ import annotations

import re
from pathlib import Path

from hvguest.direct.units import DEFAULT_PORT, SSHD, keys_dropin, port_dropin

REPO = Path(__file__).resolve().parents[3]


def keys(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (REPO / "systemd" / name).read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_socket_listens_on_vsock_any_cid() -> None:
    sock = keys("hvguest-direct.socket")
    # No CID: VMADDR_CID_ANY. Under Hyper-V the local CID reads as VMADDR_CID_ANY, so a
    # concrete CID here would never match.
    assert sock["ListenStream"] == [f"vsock::{DEFAULT_PORT}"]
    assert sock["Accept"] == ["yes"]
    assert sock["WantedBy"] == ["sockets.target"]  # for "systemctl enable", by the admin


def test_service_runs_sshd_in_inetd_mode() -> None:
    svc = keys("hvguest-direct@.service")
    assert svc["ExecStart"] == [f"-{SSHD} -i"]
    assert svc["StandardInput"] == ["socket"]
    assert svc["RuntimeDirectory"] == ["sshd"] and svc["RuntimeDirectoryPreserve"] == ["yes"]


def test_dropins_reset_what_they_replace() -> None:
    text = port_dropin(2222)
    assert text is not None and re.search(r"^ListenStream=\nListenStream=vsock::2222\n",
                                          text, re.M)
    assert port_dropin(DEFAULT_PORT) is None
    exec_start = keys_dropin(True)
    assert exec_start is not None and "\nExecStart=\nExecStart=-" + SSHD + " -i " in exec_start
    assert keys_dropin(False) is None


def test_packages_do_not_enable_it() -> None:
    rules = (REPO / "packaging/debian/rules").read_text()
    assert "dh_installsystemd --no-enable --no-start" in rules
    spec = (REPO / "packaging/rpm/hvguest.spec").read_text()
    assert "enable hvguest-direct" not in spec and "preset" not in spec
    assert "Recommends:     openssh-server" in spec
    assert "openssh-server" in (REPO / "packaging/debian/control").read_text()
