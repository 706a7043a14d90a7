"""The host's keys from KVP pool 0: which items pass, and hvguest-direct-keys, the
AuthorizedKeysCommand, run against a private pool directory and configuration."""

from __future__ import annotations

import base64
import logging
import os
import struct
from collections.abc import Iterator

import pytest
from logging_state import root_logging_restored

from hvguest.cli.direct_keys import main as direct_keys
from hvguest.direct.authorized import KEY_PREFIX, fingerprint, select_keys
from hvguest.paths import Paths
from hvguest.pool import PoolRegistry, PoolStore

GOOD = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOGyK3OWlhhRCWTMYNjH1IUWzDPuGsD485NP8dmUUNVT"
        " admin@hyperv-host")
GOOD_FP = "SHA256:YF9hfoB026ai1wFk7U0kevovbwFWcLvm5O3HfWjxb2s"  # ssh-keygen -l
OTHER = "ssh-ed25519 " + base64.b64encode(
    struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + b"\x22" * 32).decode()
EVIL = f'command="/bin/sh" {GOOD}'


def test_fingerprint_is_openssh_s() -> None:
    blob = base64.b64decode(GOOD.split()[1])
    assert fingerprint(blob) == GOOD_FP


def test_selection_keeps_good_keys_and_reports_the_rest() -> None:
    sel = select_keys([
        ("unrelated", "x"),
        (KEY_PREFIX + "0", GOOD),
        (KEY_PREFIX + "1", EVIL),
        (KEY_PREFIX + "2", OTHER + "\nssh-rsa AAAA injected"),
        (KEY_PREFIX + "07", OTHER),          # leading zero: not a documented name
        (KEY_PREFIX + "100", OTHER),         # past 99
        (KEY_PREFIX + "x\x1b[2J", OTHER),    # escape sequence in the item name
        (KEY_PREFIX + "3", OTHER),
        (KEY_PREFIX + "3", GOOD),            # a later duplicate: the first record wins
    ])
    assert sel.lines() == [GOOD, OTHER]
    reasons = dict(sel.rejected)
    assert "not an accepted key type" in reasons[KEY_PREFIX + "1"]
    assert "line-breaking" in reasons[KEY_PREFIX + "2"]
    assert "0..99" in reasons[KEY_PREFIX + "07"]
    assert "0..99" in reasons[KEY_PREFIX + "100"]
    assert KEY_PREFIX + "x\\x1b[2J" in reasons  # escaped for the log
    assert all("\n" not in r and "\x1b" not in r for item in sel.rejected for r in item)


# -- the AuthorizedKeysCommand --------------------------------------------------------


@pytest.fixture
def machine(tmp_path: os.PathLike[str]) -> Iterator[Paths]:
    paths = Paths(pool_dir=os.path.join(tmp_path, "pools"), etc=os.path.join(tmp_path, "etc"))
    os.makedirs(paths.etc)
    registry = PoolRegistry()
    store = PoolStore(paths, registry)
    store.open_all()
    store.set(0, KEY_PREFIX + "0", GOOD)
    store.set(0, KEY_PREFIX + "1", EVIL)
    store.set(0, KEY_PREFIX + "2", OTHER)
    store.set(1, KEY_PREFIX + "3", OTHER)  # pool 1 is the guest's: never read for keys
    registry.close_all()
    with root_logging_restored():
        yield paths


def configure(paths: Paths, text: str) -> None:
    with open(paths.config_file, "w") as f:
        f.write(text)


def run(paths: Paths, *args: str) -> int:
    return direct_keys([*args, "--log-target", "stderr", "--pool-dir", paths.pool_dir,
                        "--etc-dir", paths.etc])


ON = "direct:\n  enabled: true\n  authorized_keys_from_host: true\n  user: admin\n"


def test_keys_for_the_configured_user(machine: Paths, capsys: pytest.CaptureFixture[str],
                                      caplog: pytest.LogCaptureFixture) -> None:
    configure(machine, ON)
    caplog.set_level(logging.INFO)
    assert run(machine, "admin", GOOD_FP) == 0
    out = capsys.readouterr().out
    assert out == f"{GOOD}\n{OTHER}\n"
    assert "command=" not in out
    text = caplog.text
    assert f"ignored host key item {KEY_PREFIX}1" in text and "not an accepted key type" in text
    assert "for admin: 2 offered to sshd, 1 ignored; the connecting key is " \
        f"{KEY_PREFIX}0" in text


@pytest.mark.parametrize(("config", "user"), [
    (ON, "root"),                                       # another user
    (ON, "admin\nroot"),                                # a forged name
    (ON.replace("authorized_keys_from_host: true", "authorized_keys_from_host: false"),
     "admin"),
    (ON.replace("enabled: true", "enabled: false"), "admin"),
    ("", "admin"),                                      # no configuration at all
])
def test_nothing_for_anyone_else(machine: Paths, capsys: pytest.CaptureFixture[str],
                                 config: str, user: str) -> None:
    configure(machine, config)
    assert run(machine, user) == 0
    assert capsys.readouterr().out == ""


def test_a_broken_configuration_gives_no_keys(machine: Paths,
                                              capsys: pytest.CaptureFixture[str],
                                              caplog: pytest.LogCaptureFixture) -> None:
    configure(machine, ON + "  port: -5\n")
    assert run(machine, "admin") == 1
    assert capsys.readouterr().out == ""
    assert "direct.port" in caplog.text


def test_an_unreadable_pool_gives_no_keys(machine: Paths,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    configure(machine, ON)
    os.unlink(machine.pool_file(0))
    os.mkdir(machine.pool_file(0))  # not a file
    assert run(machine, "admin") == 1
    assert capsys.readouterr().out == ""


def test_reading_creates_no_pool_file(machine: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    configure(machine, ON)
    os.unlink(machine.pool_file(0))
    assert run(machine, "admin") == 0
    assert capsys.readouterr().out == ""
    assert not os.path.lexists(machine.pool_file(0))
