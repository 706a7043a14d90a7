"""Daemon command line and start-up."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest
from logging_state import root_logging_restored, unset_env

from hvguest.daemons.common import (
    EXIT_CONFIG,
    daemon_arg_parser,
    daemon_ident,
    start_daemon,
)
from hvguest.paths import Paths
from hvguest.roots import paths_from_args


@pytest.fixture(autouse=True)
def restore_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    unset_env(monkeypatch, ("JOURNAL_STREAM", "INVOCATION_ID"))
    with root_logging_restored():
        yield


def test_parser_defaults_and_paths() -> None:
    p = daemon_arg_parser("hvguest-kvpd", "KVP daemon")
    args = p.parse_args([])
    assert args.config is None and args.debug is False and args.log_target == "auto"
    assert paths_from_args(args) == Paths()
    args = p.parse_args(
        [
            "--dev-root",
            "/t/dev",
            "--sys-root",
            "/t/sys",
            "--proc-root",
            "/t/proc",
            "--pool-dir",
            "/t/pool",
            "--etc-dir",
            "/t/etc",
            "--run-dir",
            "/t/run",
            "--debug",
            "--log-target",
            "stderr",
        ]
    )
    paths = paths_from_args(args)
    assert (paths.dev, paths.sys, paths.proc, paths.pool_dir, paths.etc, paths.run) == (
        "/t/dev",
        "/t/sys",
        "/t/proc",
        "/t/pool",
        "/t/etc",
        "/t/run",
    )
    assert paths.config_file == "/t/etc/hvguest.yaml"


def test_ident() -> None:
    assert daemon_ident("kvp") == "hvguest-kvpd"
    assert daemon_ident("hvguest-vssd") == "hvguest-vssd"


def test_start_with_missing_default_config(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    args = daemon_arg_parser("hvguest-kvpd", "").parse_args(["--etc-dir", str(tmp_path)])
    paths, config = start_daemon("kvp", args)
    assert paths.etc == str(tmp_path)
    assert config.log.level == "info"


def test_bad_config_prints_one_line_and_exits_ex_config(
    tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = os.path.join(str(tmp_path), "hvguest.yaml")
    with open(path, "w") as f:
        f.write("log:\n  level: verbose\n")
    args = daemon_arg_parser("hvguest-kvpd", "").parse_args(
        ["--config", path, "--log-target", "stderr"]
    )
    with pytest.raises(SystemExit) as exc:
        start_daemon("kvp", args)
    assert exc.value.code == EXIT_CONFIG == 78
    err = capsys.readouterr().err
    assert err == (
        f"hvguest-kvpd: {path}:2: log.level: expected one of debug, info, warning, error,"
        " got 'verbose'\n"
    )


def test_explicit_missing_config_is_an_error(
    tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = os.path.join(str(tmp_path), "nope.yaml")
    args = daemon_arg_parser("hvguest-vssd", "").parse_args(["--config", path])
    with pytest.raises(SystemExit):
        start_daemon("hvguest-vssd", args)
    assert capsys.readouterr().err == f"hvguest-vssd: {path}: no such file\n"


def test_config_level_applies_unless_debug(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with open(os.path.join(str(tmp_path), "hvguest.yaml"), "w") as f:
        f.write("log:\n  level: warning\n")
    parser = daemon_arg_parser("hvguest-kvpd", "")
    start_daemon("kvp", parser.parse_args(["--etc-dir", str(tmp_path)]))
    assert logging.getLogger().level == logging.WARNING
    start_daemon("kvp", parser.parse_args(["--etc-dir", str(tmp_path), "--debug"]))
    assert logging.getLogger().level == logging.DEBUG


@pytest.mark.parametrize("columns", ["", "60", "132", "0", "wide"])
def test_help_is_what_argparse_would_print(
        monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    """The daemons' formatter only spares argparse its shutil import: same help text."""
    import argparse

    from hvguest.daemons import common

    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    else:
        monkeypatch.delenv("COLUMNS", raising=False)
    ours = daemon_arg_parser("hvguest-testd", "A daemon whose help is long enough to "
                             "wrap at a narrow width, with a word or two more.")
    plain = daemon_arg_parser("hvguest-testd", "A daemon whose help is long enough to "
                              "wrap at a narrow width, with a word or two more.")
    plain.formatter_class = argparse.HelpFormatter
    assert ours.formatter_class is common.HelpFormatter
    assert ours.format_help() == plain.format_help()


def test_terminal_columns_matches_shutil(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from hvguest.daemons.common import terminal_columns

    for value in ("", "1", "77", "-3", "x"):
        monkeypatch.setenv("COLUMNS", value)
        assert terminal_columns() == shutil.get_terminal_size().columns, value


def test_a_daemon_command_line_imports_no_shutil() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom hvguest.daemons.common import daemon_arg_parser\n"
            "daemon_arg_parser('x', 'y').parse_args([])\nprint('shutil' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    assert out == "False"
