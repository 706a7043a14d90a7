"""A hostile host's SET_IP_INFO against every network stack hvguest-kvpd writes for.

Each case goes the way a request goes in the daemon: the raw daemon-side message into
the KVP role, the role's ApplyIpConfig action into NetConfigurator with an explicit
stack (the stack's commands recorded, not run), the outcome back into the role for the
reply. Hostile values must get HV_INVALIDARG, leave every file under the OS roots as
it was, run no command, and be logged escaped. Valid values must produce a file that
the stack's parser reads back as exactly the settings the host asked for.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stack_parsers import READERS, Settings

from hvguest.command import CommandResult
from hvguest.kvp.netconfig import NetConfigurator
from hvguest.paths import Paths
from hvguest.roles.kvp import ApplyIpConfig, IpApplied, KvpRole, Log
from hvguest.wire.kvp_layout import IP_DHCP_ENABLED_OFFSET, IP_STRING_FIELDS, new_message
from hvguest.wire.status import HvStatus

GUID = "a3c5e2f0-1111-2222-3333-444455556666"
MAC = "00:15:5d:00:00:01"
STACKS = ("networkmanager", "networkd", "netplan", "ifupdown")
FIELDS = ("adapter_id", "ip_addr", "sub_net", "gate_way", "dns_addr")
SET_IP_INFO = 5
TARGETS = {
    "networkmanager": "NetworkManager/system-connections/hvguest-eth0.nmconnection",
    "networkd": "systemd/network/10-hvguest-eth0.network",
    "netplan": "netplan/90-hvguest-eth0.yaml",
    "ifupdown": "network/interfaces.d/hvguest-eth0",
}

BASE = {
    "adapter_id": "{" + GUID + "}",
    "ip_addr": "192.0.2.20",
    "sub_net": "255.255.255.0",
    "gate_way": "192.0.2.1",
    "dns_addr": "192.0.2.53",
}

PWN = "touch pwned"  # no "/": Python refuses it in a zone id
# Appended to a field's valid value. The kernel ends the host's strings at a NUL, so
# the daemon sees only what comes before one: every NUL case is hostile before it too.
SUFFIXES = {
    "newline": f"\n    pre-up {PWN}",
    "cr": "\r\nDNS=203.0.113.66",
    "crlf-section": "\r\n[Match]\r\nName=*",
    "tab": f"\tpre-up {PWN}",
    "nul": f"%x\0\n    pre-up {PWN}",
    "nul-quote": f'"\0; {PWN}',
    "double-quote": f'"; {PWN}; "',
    "single-quote": f"'; {PWN}; '",
    "semicolon": f"; {PWN}",
    "pipe": f" | {PWN}",
    "command-substitution": f"$({PWN})",
    "backticks": f"`{PWN}`",
    "zone": f"%x\n    pre-up {PWN}",
    "zone-plain": "%eth0",
    "line-separator": f"\u2028pre-up {PWN}",
    "next-line": f"\x85pre-up {PWN}",
    "escape": "\x1b[2J\x1b]0;owned\x07",
    "delete": "\x7f",
    "lone-surrogate": "\ud800",
    "fullwidth": "\uff11",
    "yaml-flow": '", "via": "203.0.113.66',
    "space-word": f" {PWN}",
}
# Whole values that parse as IP addresses in Python when the zone id is allowed.
WHOLE = {
    "ip_addr": f"fe80::20%x\n    pre-up {PWN}",
    "sub_net": f"64%x\n    pre-up {PWN}",
    "gate_way": "fe80::1%y\n[Match]\nName=*",
    "dns_addr": f"fe80::53%x\n    pre-up {PWN}",
    "adapter_id": "{" + GUID + "}%x\n[Match]",
}
LONG = {
    "long-digits": "1" * 4096,
    "long-list": ";".join(["192.0.2.53"] * 373),  # 4 KiB of valid-looking items
}


def hostile_cases() -> list[object]:
    cases = []
    for field in FIELDS:
        values = {label: BASE[field] + suffix for label, suffix in SUFFIXES.items()}
        values["zone-whole"] = WHOLE[field]
        values.update(LONG)
        for label, value in values.items():
            cases.append(pytest.param(field, label, value, id=f"{field}-{label}"))
    return cases


def message(values: dict[str, str], *, dhcp: bool = False) -> bytes:
    """A daemon-side SET_IP_INFO as the kernel hands it over, from any text (UTF-8 with
    lone surrogates kept; a field that does not fit is cut to its size)."""
    buf = new_message(SET_IP_INFO, 0)
    for spec in IP_STRING_FIELDS:
        raw = values[spec.name].encode("utf-8", "surrogatepass")[: spec.size - 1]
        buf[spec.daemon_offset : spec.daemon_offset + len(raw)] = raw
    buf[IP_DHCP_ENABLED_OFFSET] = 1 if dhcp else 0
    return bytes(buf)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv, timeout):
        self.calls.append(tuple(argv))
        return CommandResult(0, "")


class NoData:
    def ip_info(self, mac, family):
        return None


@pytest.fixture()
def roots(tmp_path):
    net = tmp_path / "sys" / "class" / "net" / "eth0"
    (net / "device").mkdir(parents=True)
    (net / "device" / "device_id").write_text("{" + GUID + "}\n")
    (net / "address").write_text(MAC + "\n")
    etc = tmp_path / "etc"
    # Every target exists with the previous configuration: nothing may touch it.
    for rel in TARGETS.values():
        (etc / rel).parent.mkdir(parents=True, exist_ok=True)
        (etc / rel).write_text("previous\n")
    (etc / "network" / "interfaces").write_text("source interfaces.d/*\n")
    (tmp_path / "run").mkdir()
    return tmp_path


def snapshot(root) -> dict[str, tuple[int, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = b"" if os.path.isdir(path) else open(path, "rb").read()  # noqa: SIM115
            out[os.path.relpath(path, root)] = (st.st_mode, data)
    return out


def serve(roots, stack: str, raw: bytes) -> tuple[int, list[str], Recorder]:
    """The request through the role and the configurator: (status, log lines, commands)."""
    role = KvpRole(NoData())
    role.registered("3.1")
    runner = Recorder()
    paths = Paths(sys=str(roots / "sys"), os_etc=str(roots / "etc"))
    result = role.handle(raw, 0.0)
    actions = list(result.actions)
    applies = [a for a in actions if isinstance(a, ApplyIpConfig)]
    if applies:
        configurator = NetConfigurator(paths, stack=stack, runner=runner)
        outcome = configurator.apply(applies[0].config)
        result = role.complete(IpApplied(outcome.status, outcome.detail), 0.0)
        actions += result.actions
    assert result.reply is not None
    lines = [a.message % a.args for a in actions if isinstance(a, Log)]
    return struct.unpack_from("<I", result.reply)[0], lines, runner


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize(("field", "label", "value"), hostile_cases())
@pytest.mark.parametrize("dhcp", [False, True], ids=["static", "dhcp"])
def test_hostile_field_is_refused_and_changes_nothing(roots, stack, field, label, value, dhcp):
    values = dict(BASE, **{field: value})
    if field == "ip_addr" and label == "zone-whole":
        values["sub_net"] = "64"
    before = snapshot(roots)
    status, lines, runner = serve(roots, stack, message(values, dhcp=dhcp))
    assert status == HvStatus.HV_INVALIDARG, lines
    assert runner.calls == []
    assert snapshot(roots) == before
    assert len(lines) == 1
    line = lines[0]
    # The log shows what was refused, escaped and bounded: nothing raw from the host.
    assert field in line
    assert line.isascii() and line.isprintable(), line
    assert len(line) <= 400


@pytest.mark.parametrize("stack", STACKS)
def test_zone_id_log_shows_the_payload_escaped(roots, stack):
    values = dict(BASE, dns_addr=WHOLE["dns_addr"])
    status, lines, _runner = serve(roots, stack, message(values))
    assert status == HvStatus.HV_INVALIDARG
    assert "fe80::53%x\\n    pre-up" in lines[0]


def family_order(items: list[str]) -> list[str]:
    return sorted(items, key=lambda text: ":" in text)  # stable: IPv4, then IPv6


VALID = {
    "v4": (
        {"ip_addr": "192.0.2.20", "sub_net": "255.255.255.0", "gate_way": "192.0.2.1",
         "dns_addr": "192.0.2.53"},
        False,
        Settings(addresses=["192.0.2.20/24"], gateways=["192.0.2.1"], dns=["192.0.2.53"]),
    ),
    "dual-stack": (
        {"ip_addr": "192.0.2.20; 192.0.2.21;2001:DB8:0:0::20", "sub_net": "255.255.255.0;24;/64",
         "gate_way": "192.0.2.1;2001:db8::1;", "dns_addr": "192.0.2.53; 2001:0db8::53;"},
        False,
        Settings(
            addresses=["192.0.2.20/24", "192.0.2.21/24", "2001:db8::20/64"],
            gateways=["192.0.2.1", "2001:db8::1"],
            dns=["192.0.2.53", "2001:db8::53"],
        ),
    ),
    "v6-link-local-gateway": (
        {"ip_addr": "2001:db8::20", "sub_net": "ffff:ffff:ffff:ffff::", "gate_way": "fe80::1",
         "dns_addr": "2001:db8::53"},
        False,
        Settings(addresses=["2001:db8::20/64"], gateways=["fe80::1"], dns=["2001:db8::53"]),
    ),
    "dhcp": (
        {"ip_addr": "", "sub_net": "", "gate_way": "", "dns_addr": "192.0.2.53;192.0.2.54"},
        True,
        Settings(dhcp=True, dns=["192.0.2.53", "192.0.2.54"]),
    ),
}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("case", sorted(VALID))
def test_valid_request_reads_back_as_exactly_the_intended_settings(roots, stack, case):
    values, dhcp, want = VALID[case]
    status, lines, runner = serve(roots, stack, message(dict(BASE, **values), dhcp=dhcp))
    assert status == HvStatus.HV_S_OK, lines
    assert runner.calls  # the stack was asked to apply it
    text = (roots / "etc" / TARGETS[stack]).read_text(encoding="ascii")
    got = READERS[stack](text, "eth0")
    assert got.name == "eth0"
    assert got.mac.lower() == ("" if stack == "ifupdown" else MAC)
    assert got.dhcp == want.dhcp
    assert family_order(got.addresses) == want.addresses
    assert family_order(got.gateways) == want.gateways
    assert family_order(got.dns) == want.dns


def test_valid_case_expectations_are_canonical():
    # The expectations above are written by hand: keep them in ipaddress's own form.
    for _values, _dhcp, want in VALID.values():
        for text in want.addresses:
            assert ipaddress.ip_interface(text).with_prefixlen == text
        assert all(str(ipaddress.ip_address(t)) == t for t in want.gateways + want.dns)


def test_refusal_is_logged_as_a_warning(roots):
    role = KvpRole(NoData())
    role.registered("3.1")
    result = role.handle(message(dict(BASE, gate_way=WHOLE["gate_way"])), 0.0)
    logs = [a for a in result.actions if isinstance(a, Log)]
    assert [a.level for a in logs] == [logging.WARNING]


# The renderers' own inputs: values that Python's ipaddress types can carry but that no
# file may ever receive. Renderers take only typed, zone-free values.
RENDER_ATTACKS = {
    "str-address": dict(addresses=(f"fe80::20%x\n    pre-up {PWN}/64",)),
    "str-gateway": dict(gateways=("fe80::1%y\n[Match]\nName=*",)),
    "str-dns": dict(dns=(f"fe80::53%x\n    pre-up {PWN}",)),
    "scoped-address": dict(
        addresses=(ipaddress.IPv6Interface("fe80::20%x\n    pre-up reboot/64"),)
    ),
    "scoped-gateway": dict(gateways=(ipaddress.IPv6Address("fe80::1%y\n[Match]\nName=*"),)),
    "scoped-dns": dict(dns=(ipaddress.IPv6Address("fe80::53%x\n    pre-up reboot"),)),
    "plain-zone-dns": dict(dns=(ipaddress.IPv6Address("fe80::53%eth0"),)),
}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("attack", sorted(RENDER_ATTACKS))
def test_renderers_cannot_be_handed_raw_or_zoned_values(roots, stack, attack):
    from hvguest.kvp.netconfig import plan_for
    from hvguest.wire.ipconfig import IpConfig

    fields = dict(adapter_id=GUID, dhcp=False, addresses=(), gateways=(), dns=())
    fields.update(RENDER_ATTACKS[attack])
    paths = Paths(sys=str(roots / "sys"), os_etc=str(roots / "etc"))
    with pytest.raises((TypeError, ValueError), match="IPv4|IPv6|zone"):
        plan = plan_for(stack, paths, IpConfig(**fields), "eth0", MAC)
        pytest.fail(f"rendered: {plan.text!r}")


FIELD_BYTES = st.one_of(
    st.binary(max_size=64),
    st.text(st.sampled_from(list("0123456789abcdefABCDEF:./; %\n\t{}-") + ["\x85", "\u2028"]),
            max_size=64).map(lambda t: t.encode()),
)
ADDRESS_BYTES = st.lists(
    st.one_of(
        st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
        st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
    ),
    max_size=3,
).map(lambda items: ";".join(items).encode())


def field_bytes(field):
    if field == "adapter_id":
        return st.one_of(st.just(BASE["adapter_id"].encode()), FIELD_BYTES)
    if field == "sub_net":
        return st.one_of(st.just(b"24;24;24"), FIELD_BYTES)
    return st.one_of(ADDRESS_BYTES, FIELD_BYTES)


def test_any_bytes_get_invalidarg_or_only_plain_addresses():
    seen = set()

    @settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.fixed_dictionaries({f: field_bytes(f) for f in FIELDS}), st.booleans())
    def run(fields, dhcp):
        buf = bytearray(message(dict.fromkeys(FIELDS, ""), dhcp=dhcp))
        for spec in IP_STRING_FIELDS:
            raw = fields[spec.name][: spec.size - 1]
            buf[spec.daemon_offset : spec.daemon_offset + len(raw)] = raw
        role = KvpRole(NoData())
        role.registered("3.1")
        result = role.handle(bytes(buf), 0.0)
        applies = [a for a in result.actions if isinstance(a, ApplyIpConfig)]
        if not applies:
            seen.add("refused")
            assert struct.unpack_from("<I", result.reply)[0] == HvStatus.HV_INVALIDARG
            return
        seen.add("accepted")
        config = applies[0].config
        for value in (*config.addresses, *config.gateways, *config.dns):
            assert re.fullmatch(r"[0-9a-fA-F:./]+", value.compressed)

    run()
    assert seen == {"refused", "accepted"}  # both outcomes were exercised
