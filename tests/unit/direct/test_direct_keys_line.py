"""The authorized-key line check: what sshd may see from the host, and what never."""

from __future__ import annotations

import base64
import struct

import pytest

from hvguest.direct.keys import MAX_LINE, KeyLineError, parse_key_line

# Made by ssh-keygen (public halves only).
ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOGyK3OWlhhRCWTMYNjH1IUWzDPuGsD485NP8dmUUNVT"
           " admin@hyperv-host")
ECDSA384 = ("ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBPz9JArf"
            "G1flMvDXnJcM9kpXz19Nn94WouICOhArn22UujAZjGe4ovHh1CIxiLF/54kjQWoAYEQgthLXVuiuO2Qqr"
            "jTbBE2gDDg35aqtAo1PavBtrAvAXqdFbbp0CooR/Q== ec key")
RSA3072 = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCuSnvrDn8xwijrO5+oV0lkVlzOgg47miB9E6KX5C7H1wqS0wGsDl"
    "QZNkow7fUfeGfHnFYX9FV2PHeBjUHFKx3FM1lx7UPgItOUsjiH1HXKfIsw0NF02O45TN2b14F7cNGig+oy/GGL9FK1"
    "3B0Axg/L5w7zdLPTn8T57bjCXtjqje0jMMbEJ7iYGTxWtCjUIkqJmCxNY+T3iaG+/EYXa5Lps4HLAh7VGweIjjCji"
    "Oi6Jeb609Ut5UZWtSWo9L43flgPtqP4y2h1u6xHHrPsItJGNXVfPAFWAyKjzWacgfi19r/kwMK1A479gncbYAOP4xM"
    "DaMMNBfrhnTeYLLUjauQrv7nJfRPvyEJJkwMwGk8TvVK2BR3RQank1AyI/ZZ+ARDpJhmiQCXC75UEq2Ggb9lhQrWT/"
    "rF+VP45KgbdjwW0E73PJrgfWYyVmMSsgNTj+h4FA4oII80nyLe504b+cf6ePtF0l2C+rQ7dVLBDpmzpIAVHTp3NVEu"
    "1HeQk15UkBHU=")


def sshstr(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def ed25519_blob(key: bytes = b"\x11" * 32, name: bytes = b"ssh-ed25519") -> bytes:
    return sshstr(name) + sshstr(key)


@pytest.mark.parametrize("line", [ED25519, ECDSA384, RSA3072])
def test_real_keys_pass_and_are_rebuilt_unchanged(line: str) -> None:
    key = parse_key_line(line)
    assert key.line() == line


def test_comment_is_optional_and_spaces_are_normalised() -> None:
    bare = " ".join(ED25519.split(" ")[:2])
    assert parse_key_line(bare).comment == ""
    assert parse_key_line(bare + "  ").line() == bare
    assert parse_key_line(ED25519.replace(" admin", "   admin")).comment == "admin@hyperv-host"


def test_security_key_types() -> None:
    blob = sshstr(b"sk-ssh-ed25519@openssh.com") + sshstr(b"\x01" * 32) + sshstr(b"ssh:")
    assert parse_key_line(f"sk-ssh-ed25519@openssh.com {b64(blob)}").key_type.startswith("sk-")
    blob = (sshstr(b"sk-ecdsa-sha2-nistp256@openssh.com") + sshstr(b"nistp256")
            + sshstr(b"\x04" + b"\x02" * 64) + sshstr(b"ssh:"))
    parse_key_line(f"sk-ecdsa-sha2-nistp256@openssh.com {b64(blob)}")


# -- attacks: each would put something other than one plain key in front of sshd ------

KEY_PART = ED25519.split(" ", 1)[1]


@pytest.mark.parametrize("line", [
    f'command="/bin/sh -c id" ssh-ed25519 {KEY_PART}',
    f'from="*" ssh-ed25519 {KEY_PART}',
    f"restrict,pty ssh-ed25519 {KEY_PART}",
    f"environment=\"LD_PRELOAD=/tmp/x.so\" ssh-ed25519 {KEY_PART}",
    f"cert-authority ssh-ed25519 {KEY_PART}",
    f"no-pty ssh-ed25519 {KEY_PART}",
])
def test_options_are_refused(line: str) -> None:
    with pytest.raises(KeyLineError, match="not an accepted key type"):
        parse_key_line(line)


@pytest.mark.parametrize("line", [
    ED25519 + "\nssh-ed25519 " + b64(ed25519_blob()) + " second",   # a second line
    ED25519 + "\rcommand=x",
    ED25519.replace(" admin", "\tadmin"),
    ED25519 + "\x00",
    ED25519 + "\x1b[2J",                                          # terminal escape
    ED25519 + "\u2028more",                                       # line separator
    ED25519 + "\u202eevil",                                       # bidi override
    ED25519 + "\x85",                                             # C1 next line
])
def test_control_and_line_breaking_characters_are_refused(line: str) -> None:
    with pytest.raises(KeyLineError, match="control or line-breaking"):
        parse_key_line(line)


def test_declared_type_must_match_the_key_data() -> None:
    rsa_data = RSA3072.split(" ")[1]
    with pytest.raises(KeyLineError, match="key data is of type 'ssh-rsa'"):
        parse_key_line(f"ssh-ed25519 {rsa_data}")
    with pytest.raises(KeyLineError, match="of type"):
        parse_key_line(f"ecdsa-sha2-nistp256 {ECDSA384.split(' ')[1]}")


@pytest.mark.parametrize(("blob", "why"), [
    (ed25519_blob(b"\x11" * 31), "32-byte"),
    (ed25519_blob() + sshstr(b"extra"), "32-byte"),
    (ed25519_blob() + b"\x00\x00", "length field"),
    (ed25519_blob()[:-1], "runs past"),
    (sshstr(b"ssh-ed25519") + struct.pack(">I", 0xFFFFFFFF), "runs past"),
    (b"", "expected"),
])
def test_key_data_must_be_a_whole_key_of_its_type(blob: bytes, why: str) -> None:
    with pytest.raises(KeyLineError, match=why):
        parse_key_line(f"ssh-ed25519 {b64(blob)}")


def test_weak_and_malformed_rsa() -> None:
    n_1024 = b"\x00" + b"\xc3" * 128
    blob = sshstr(b"ssh-rsa") + sshstr(b"\x01\x00\x01") + sshstr(n_1024)
    with pytest.raises(KeyLineError, match="1024 bits"):
        parse_key_line(f"ssh-rsa {b64(blob)}")
    negative = sshstr(b"ssh-rsa") + sshstr(b"\x01\x00\x01") + sshstr(b"\xc3" * 256)
    with pytest.raises(KeyLineError, match="not a positive integer"):
        parse_key_line(f"ssh-rsa {b64(negative)}")


@pytest.mark.parametrize("data", [
    KEY_PART.split(" ")[0] + "=",            # padding where none belongs
    KEY_PART.split(" ")[0][:-1],             # cut: length not a multiple of 4
    KEY_PART.split(" ")[0].replace("A", "-", 1),  # URL-safe alphabet
    "AAAA\u0661AAA",                         # an Arabic-Indic digit
])
def test_base64_must_be_canonical(data: str) -> None:
    with pytest.raises(KeyLineError):
        parse_key_line(f"ssh-ed25519 {data}")


def test_base64_with_stray_bits_in_the_padding_is_refused() -> None:
    """"...Q==" and "...R==" decode to the same bytes: only the canonical form passes,
    so what sshd gets is exactly what was checked."""
    kind, data, _ = ECDSA384.split(" ", 2)
    assert data.endswith("Q==")
    with pytest.raises(KeyLineError, match="canonical"):
        parse_key_line(f"{kind} {data[:-3]}R==")


@pytest.mark.parametrize("line", [
    "", " ", "ssh-ed25519", "ssh-ed25519 ", f"ssh-dss {b64(sshstr(b'ssh-dss'))}",
    f" ssh-ed25519{KEY_PART}", "SSH-ED25519 " + KEY_PART,
])
def test_not_a_key_line(line: str) -> None:
    with pytest.raises(KeyLineError):
        parse_key_line(line)


def test_length_limits() -> None:
    with pytest.raises(KeyLineError, match=f"limit {MAX_LINE}"):
        parse_key_line(ED25519 + " " + "x" * MAX_LINE)
    with pytest.raises(KeyLineError, match="comment of 300"):
        parse_key_line(ED25519.rsplit(" ", 1)[0] + " " + "c" * 300)


def test_error_names_the_item_and_is_one_line() -> None:
    with pytest.raises(KeyLineError) as exc:
        parse_key_line('command="x\ny" ssh-ed25519 AAAA', "hvguest.ssh.authorized_key.3")
    assert str(exc.value).startswith("hvguest.ssh.authorized_key.3: ")
    assert "\n" not in str(exc.value)
