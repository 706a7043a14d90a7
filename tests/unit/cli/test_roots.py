"""One way from root options to Paths: hvguestctl and every daemon agree."""

from __future__ import annotations

import argparse

import pytest

from hvguest.daemons.common import daemon_arg_parser
from hvguest.paths import Paths
from hvguest.roots import ROOT_OPTIONS, add_root_options, paths_from_args

ROOTS = ["--dev-root", "/t/dev", "--sys-root", "/t/sys", "--proc-root", "/t/proc",
         "--pool-dir", "/t/pool", "--etc-dir", "/t/etc", "--run-dir", "/t/run"]


def cli_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_root_options(p)
    return p


def test_daemon_and_cli_build_the_same_paths() -> None:
    daemon = paths_from_args(daemon_arg_parser("hvguest-kvpd", "").parse_args(ROOTS))
    cli = paths_from_args(cli_parser().parse_args(ROOTS))
    assert daemon == cli
    assert (cli.dev, cli.sys, cli.proc, cli.pool_dir, cli.etc, cli.run) == (
        "/t/dev", "/t/sys", "/t/proc", "/t/pool", "/t/etc", "/t/run")
    assert paths_from_args(cli_parser().parse_args([])) == Paths()


def test_root_dir_moves_every_root_and_options_override() -> None:
    paths = paths_from_args(cli_parser().parse_args(["--root-dir", "/r", "--run-dir", "x"]))
    assert paths.sys == "/r/sys" and paths.os_etc == "/r/etc" and paths.lib == "/r/usr/lib/hvguest"
    assert paths.run.endswith("/x") and paths.run.startswith("/")  # made absolute


def test_only_the_heartbeat_daemon_takes_os_etc() -> None:
    with pytest.raises(SystemExit):
        daemon_arg_parser("hvguest-kvpd", "").parse_args(["--os-etc-dir", "/t/etc"])
    args = daemon_arg_parser("hvguest-heartbeatd", "", os_etc=True).parse_args(
        ["--os-etc-dir", "/t/os"])
    assert paths_from_args(args).os_etc == "/t/os"
    assert set(ROOT_OPTIONS.values()) <= {f for f in Paths.__dataclass_fields__}
