"""AUTO pool items from injected roots and a fake netlink snapshot."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from hvguest.kvp.autopool import AUTO_KEYS, AutoPool, Fqdn, os_identity, parse_os_release
from hvguest.kvp.netlink import Address, Link, Snapshot
from hvguest.paths import Paths


class FakeReader:
    def __init__(self, snap):
        self.snap = snap
        self.calls = 0

    def snapshot(self):
        self.calls += 1
        return self.snap


SNAP = Snapshot(
    links=[
        Link(1, "lo", 0x8, "00:00:00:00:00:00"),
        Link(2, "eth0", 0, "00:15:5D:00:00:01"),
        Link(3, "docker0", 0, "02:42:00:00:00:01"),
        Link(4, "eth1", 0, "00:15:5D:00:00:02"),
    ],
    addresses=[
        Address(1, socket.AF_INET, "127.0.0.1", 8, 0x80),
        Address(2, socket.AF_INET, "192.0.2.10", 24, 0x80),
        Address(3, socket.AF_INET, "172.17.0.1", 16, 0x80),
        Address(4, socket.AF_INET, "198.51.100.7", 24, 0x80),
        Address(2, socket.AF_INET6, "2001:db8::10", 64, 0x80),
        Address(2, socket.AF_INET6, "fe80::1", 64, 0x80),
    ],
)


def make(tmp_path, **kw):
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    fqdn = Fqdn(resolve=lambda host: host + ".example.org", hostname=lambda: "guest")
    fqdn.refresh(wait=5)
    return AutoPool(
        Paths(os_etc=str(etc)), version=lambda: "3.1", reader=FakeReader(SNAP), fqdn=fqdn, **kw
    )


def test_items_in_reference_order(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text('NAME="Debian GNU/Linux"\nVERSION_ID="12"\n')
    items = make(tmp_path).items()
    assert [k for k, _ in items] == list(AUTO_KEYS)
    values = dict(items)
    assert values["FullyQualifiedDomainName"] == "guest.example.org"
    assert values["IntegrationServicesVersion"] == "3.1"
    assert values["NetworkAddressIPv4"] == "192.0.2.10;172.17.0.1;198.51.100.7"
    assert values["NetworkAddressIPv6"] == "2001:db8::10;fe80::1"
    assert (values["OSName"], values["OSMajorVersion"], values["OSMinorVersion"]) == (
        "Debian GNU/Linux",
        "12",
        "",
    )
    uname = os.uname()
    assert values["OSBuildNumber"] == uname.release
    assert values["OSVersion"] == uname.release.split("-")[0]
    assert values["ProcessorArchitecture"] == uname.machine


def test_excluded_and_primary_nics(tmp_path):
    pool = make(
        tmp_path,
        exclude=lambda name: name.startswith("docker"),
        rank=lambda name: 0 if name == "eth1" else 1,
    )
    assert dict(pool.items())["NetworkAddressIPv4"] == "198.51.100.7;192.0.2.10"


def test_addresses_cached_for_a_burst(tmp_path):
    now = [0.0]
    pool = make(tmp_path, clock=lambda: now[0])
    for _ in range(10):
        pool.items()
    assert pool.reader.calls == 1
    now[0] = 5.0
    pool.items()
    assert pool.reader.calls == 2


def test_os_release_quoting_and_fallbacks(tmp_path):
    assert parse_os_release("# c\nNAME='A \"B\"'\nVERSION_ID=1\\.2\nX\n") == {
        "NAME": 'A "B"',
        "VERSION_ID": "1.2",
    }
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "redhat-release").write_text("Red Hat Enterprise Linux\n9\n4\n")
    assert os_identity(Paths(os_etc=str(etc)), "Linux") == ("Red Hat Enterprise Linux", "9", "4")
    (etc / "redhat-release").unlink()
    assert os_identity(Paths(os_etc=str(etc)), "Linux") == ("Linux", "", "")


def test_fqdn_never_an_error_and_never_stalls():
    release = threading.Event()

    def slow(host):
        release.wait(10)
        return "late.example"

    fqdn = Fqdn(resolve=slow, hostname=lambda: "guest")
    fqdn.refresh(wait=0.05)
    assert fqdn.value == "guest"  # the host name until the lookup answers
    fqdn.refresh()  # single flight: no second lookup while one runs
    release.set()
    for _ in range(100):
        if fqdn.value == "late.example":
            break
        threading.Event().wait(0.02)
    assert fqdn.value == "late.example"


def test_unresolvable_name_falls_back_to_host_name(monkeypatch):
    from hvguest.kvp.autopool import canonical_name

    def fail(*args):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert canonical_name("guest") == "guest"


@pytest.mark.parametrize("name", ["guest", "guest.example.com", "guest.example.", "",
                                  "a" * 63, "a" * 64, "b." + "a" * 64, "a" * 64 + ".b",
                                  "a..b", ".a", "..", "gäst.example", "Gast-01.EXAMPLE"])
def test_resolver_name_is_what_the_idna_codec_makes(name: str) -> None:
    """Bytes for ASCII (skipping the codec's imports), the same bytes or the same error."""
    import codecs

    from hvguest.kvp.autopool import resolver_name

    try:
        expected: object = codecs.encode(name, "idna")
    except UnicodeError as exc:
        with pytest.raises(UnicodeError) as info:
            resolver_name(name)
        assert str(info.value) == str(exc)
        return
    ours = resolver_name(name)
    if name.isascii():
        assert ours == expected
    else:
        assert ours == name  # left to the codec, as before


def test_lookup_hands_the_resolver_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from hvguest.kvp.autopool import canonical_name

    asked: list[object] = []

    def record(host: object, *args: object) -> list[tuple[object, ...]]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "guest.example", ("10.0.0.1", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", record)
    assert canonical_name("guest") == "guest.example"
    assert canonical_name("gäst") == "guest.example"
    assert asked == [b"guest", "gäst"]
    assert canonical_name("a" * 64 + ".b") == "a" * 64 + ".b"  # the codec's error path
    assert len(asked) == 2


def test_an_ascii_lookup_imports_no_idna_codec() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom hvguest.kvp.autopool import canonical_name\n"
            "canonical_name('localhost')\nprint('encodings.idna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    assert out == "False"
