"""A local user against the real hvguest-fcopyd under the simulator: uid 65534 plants
directories and symbolic links under both default allowed roots (/tmp and
/var/lib/hvguest/incoming, inside the sandbox), then the host copies there with
CREATE_PATH and OVER_WRITE, as ``Copy-VMFile -CreateFullPath -Force`` does. Every
such copy is refused with HV_E_FAIL, nothing lands, the refusal is in the transfer
record; plain copies into both roots keep working.
"""

from __future__ import annotations

import os
import sys

import pytest

from hvguest.sim.client import SimClient
from hvguest.wire.fcopy import CREATE_PATH, OVER_WRITE
from hvguest.wire.status import HvStatus

pytestmark = [pytest.mark.root, pytest.mark.fuse]

DAEMON = [sys.executable, "-m", "hvguest.daemons.fcopyd", "--log-target", "stderr"]
INCOMING = "/var/lib/hvguest/incoming"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
FLAGS = CREATE_PATH | OVER_WRITE


def run(sim: SimClient, *cmd: str, user: list[str] | None = None) -> None:
    r = sim.exec([*(user or []), *cmd])
    assert r.returncode == 0, (cmd, r.stderr)


@pytest.fixture(params=["legacy", "uio"])
def sim(tmp_path, request):
    with SimClient.start(
        DAEMON, services=("fcopy",), fcopy=request.param, workdir=str(tmp_path / "sim")
    ) as s:
        if not s.call("wait_registered"):
            raise AssertionError(f"hvguest-fcopyd did not register: {s.state()}")
        yield s


def test_planted_directories_and_links_are_refused(sim, tmp_path):
    src = tmp_path / "payload"
    src.write_bytes(b"#!/bin/sh\necho root\n")
    # The attacker's steps, as uid 65534; the administrator's mistake (a 0777 directory
    # under the incoming root) as root.
    run(sim, "mkdir", "/tmp/deploy", user=NOBODY)
    run(sim, "mkdir", "-m", "0777", "/tmp/open", user=NOBODY)
    run(sim, "ln", "-s", "/etc", "/tmp/etc-link", user=NOBODY)
    run(sim, "sh", "-c", "printf mine > /tmp/report.txt", user=NOBODY)
    run(sim, "mkdir", "-p", "-m", "0777", f"{INCOMING}/drop")
    run(sim, "chmod", "0777", f"{INCOMING}/drop")
    run(sim, "mkdir", f"{INCOMING}/drop/deploy", user=NOBODY)
    run(sim, "ln", "-s", "/etc", f"{INCOMING}/drop/etc-link", user=NOBODY)
    targets = [
        ("/tmp/deploy", "run.sh"),
        ("/tmp/deploy/bin", "run.sh"),
        ("/tmp/open", "run.sh"),
        ("/tmp/etc-link", "hvguest-planted"),
        ("/tmp", "report.txt"),
        (f"{INCOMING}/drop", "run.sh"),
        (f"{INCOMING}/drop/deploy", "run.sh"),
        (f"{INCOMING}/drop/etc-link", "hvguest-planted"),
    ]
    for directory, name in targets:
        status = sim.fcopy_send(str(src), directory, name, FLAGS)
        assert status == HvStatus.HV_E_FAIL, (directory, name, hex(status))
        if name != "report.txt":
            assert not os.path.lexists(f"{sim.root}{directory}/{name}"), (directory, name)
    assert not os.path.lexists(f"{sim.root}/etc/hvguest-planted")
    assert not os.path.lexists(f"{sim.root}/tmp/deploy/bin")
    with open(f"{sim.root}/tmp/report.txt", "rb") as f:
        assert f.read() == b"mine"
    assert os.lstat(f"{sim.root}/tmp/report.txt").st_uid == 65534
    recent = sim.exec(
        [sys.executable, "-m", "hvguest.cli.main", "fcopy", "recent", "--json"]
    ).stdout.decode()
    assert "group or others" in recent or "owned by uid" in recent, recent


def test_plain_copies_with_create_path_still_work(sim, tmp_path):
    src = tmp_path / "payload"
    src.write_bytes(b"data\n" * 1000)
    for directory, name in [
        ("/tmp", "plain.bin"),
        ("/tmp/fresh/dir", "nested.bin"),
        (INCOMING, "in.bin"),
        (f"{INCOMING}/new/sub", "deep.bin"),
    ]:
        assert sim.fcopy_send(str(src), directory, name, FLAGS) == HvStatus.HV_S_OK
        path = f"{sim.root}{directory}/{name}"
        with open(path, "rb") as f:
            assert f.read() == src.read_bytes()
        assert os.lstat(path).st_uid == 0
