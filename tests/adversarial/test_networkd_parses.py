"""The .network files hvguest-kvpd writes, read by the real systemd-networkd: every
line understood, nothing ignored (see networkd_check for how it runs, isolated)."""

from __future__ import annotations

import random

import pytest
from networkd_check import complaints, unavailable
from random_requests import random_request

from hvguest.kvp.netrender import render_networkd
from hvguest.wire.ipconfig import LinkName, MacAddress, parse_ip_config

pytestmark = [pytest.mark.root, pytest.mark.system]


@pytest.fixture(scope="module", autouse=True)
def _networkd_available():
    reason = unavailable()
    if reason:
        pytest.skip(reason)


def test_the_check_reports_what_networkd_ignores(tmp_path):
    (tmp_path / "10-hvguest-eth0.network").write_text(
        "[Match]\nName=eth0\n\n[Network]\nAddress=192.0.2.20/24\nBogus=1\nDNS=fe80::53%x\n"
    )
    found = complaints(str(tmp_path))
    assert len(found) == 2, found
    assert "10-hvguest-eth0.network:6: Unknown key 'Bogus'" in found[0]
    assert "10-hvguest-eth0.network:7:" in found[1] and "fe80::53%x" in found[1]


def test_rendered_files_are_understood_by_networkd(tmp_path):
    rng = random.Random(20261203)
    written = 0
    for i in range(300):
        config = parse_ip_config(random_request(rng))
        mac = MacAddress(":".join(f"{rng.getrandbits(8):02X}" for _ in range(6)))
        name = LinkName(f"eth{i}")
        text = render_networkd(config, name, mac if i % 3 else None)
        (tmp_path / f"10-hvguest-eth{i}.network").write_text(text)
        written += 1
    assert written == 300
    assert complaints(str(tmp_path)) == []
