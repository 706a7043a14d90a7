"""The reference daemons' names: upstream options with upstream meaning, hvguest's
own long options passed on, and when the program detaches."""

from __future__ import annotations

import io
import os

import pytest

from hvguest.cli import upstream
from hvguest.cli.upstream import KVP, PROGRAMS, VSS, Invocation, parse, should_detach


def test_every_name_maps_to_its_daemon() -> None:
    assert {n: p.daemon for n, p in PROGRAMS.items()} == {
        "hv_kvp_daemon": "hvguest-kvpd", "hypervkvpd": "hvguest-kvpd",
        "hv_vss_daemon": "hvguest-vssd", "hypervvssd": "hvguest-vssd",
        "hv_fcopy_daemon": "hvguest-fcopyd", "hv_fcopy_uio_daemon": "hvguest-fcopyd",
        "hypervfcopyd": "hvguest-fcopyd",
    }
    # /proc/PID/comm keeps 15 characters: each name but the UIO one fits whole, as
    # with the C programs (pgrep matches "hv_fcopy_uio_da" for both).
    assert [n for n in PROGRAMS if len(n) > 15] == ["hv_fcopy_uio_daemon"]


@pytest.mark.parametrize("argv", [["-n"], ["--no-daemon"], ["-nd"], ["-n", "-d"]])
def test_no_daemon(argv: list[str]) -> None:
    assert parse(KVP, argv).foreground


def test_debug_flag_of_newer_kvp_daemons() -> None:
    for argv in (["-d"], ["--debug-enabled"], ["--debug"], ["-dn"]):
        inv = parse(KVP, argv)
        assert inv.debug and inv.passed_on.count("--debug") == 1, argv
    # The VSS and file copy daemons have no -d upstream: an invalid option there.
    with pytest.raises(upstream.UsageError, match="invalid option -- 'd'"):
        parse(VSS, ["-d"])
    assert parse(VSS, ["--debug"]).passed_on == ["--debug"]  # hvguest's own option


def test_hvguest_long_options_are_passed_on_with_their_values() -> None:
    inv = parse(KVP, ["-n", "--config", "/x.yaml", "--dev-root=/d", "--log-target", "stderr"])
    assert inv.foreground
    assert inv.passed_on == ["--config", "/x.yaml", "--dev-root=/d", "--log-target", "stderr"]
    # A value that looks like an option goes with its option, not to the upstream parser.
    assert parse(KVP, ["--config", "-n"]) == Invocation(passed_on=["--config", "-n"])


@pytest.mark.parametrize("argv", [["-x"], ["-nx"], ["-v"]])
def test_unknown_short_option_is_a_usage_error(argv: list[str]) -> None:
    err = io.StringIO()
    assert upstream.run("hv_kvp_daemon", argv, err=err) == 1
    assert "invalid option" in err.getvalue() and "Usage: hv_kvp_daemon [options]" in err.getvalue()


def test_help_prints_usage_and_exits_0() -> None:
    out = io.StringIO()
    assert upstream.run("hypervkvpd", ["-h"], out=out) == 0
    text = out.getvalue()
    assert text.startswith("Usage: hypervkvpd [options]\n")
    assert "-n, --no-daemon" in text and "-d, --debug" in text and "hvguest-kvpd" in text
    out = io.StringIO()
    assert upstream.run("hv_vss_daemon", ["--help"], out=out) == 0
    assert "-d, --debug" not in out.getvalue()


def test_detach_unless_no_daemon_or_a_notify_unit() -> None:
    assert should_detach(Invocation(), {})
    assert not should_detach(Invocation(foreground=True), {})
    assert not should_detach(Invocation(), {"NOTIFY_SOCKET": "/run/systemd/notify"})


def test_bad_configuration_is_reported_before_detaching(
        tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once detached, stderr is /dev/null: the terminal must hear of a bad file first
    (and nothing forks)."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    path = os.path.join(str(tmp_path), "hvguest.yaml")
    with open(path, "w") as f:
        f.write("log:\n  level: verbose\n")

    def no_fork() -> None:
        raise AssertionError("detached despite a bad configuration")

    monkeypatch.setattr(upstream, "detach", no_fork)
    err = io.StringIO()
    assert upstream.run("hv_kvp_daemon", ["--config", path], err=err) == 78
    assert err.getvalue().startswith(f"hvguest-kvpd: {path}:2: log.level")


def test_config_to_check() -> None:
    assert upstream.config_to_check(["--config", "/a"]) == "/a"
    assert upstream.config_to_check(["--config=/b"]) == "/b"
    assert upstream.config_to_check([]) == "/etc/hvguest/hvguest.yaml"
    assert upstream.config_to_check(["--etc-dir", "/t/etc"]) is None
