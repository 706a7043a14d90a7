"""The shipped 50-postgresql hook against a real PostgreSQL on a loop-mounted ext4.

A server is started with its data directory on the loop filesystem; hvguest-vssd
runs the hook (CHECKPOINT) and freezes; while frozen the loop image is copied (the
"snapshot"); after THAW the live cluster accepts writes, and the snapshot, started
as a second server, recovers and passes pg_amcheck with data checksums on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest
from test_vss_daemon import FREEZE, OK, THAW, Daemon
from test_vss_fixtures import LoopSet, in_private_ns

PG_BIN = "/usr/lib/postgresql/15/bin"
HOOK = os.path.join(os.path.dirname(__file__), "..", "..", "hooks", "vss.d", "50-postgresql")

pytestmark = [
    pytest.mark.root,
    pytest.mark.system,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(f"{PG_BIN}/postgres"), reason="needs PostgreSQL 15"),
]


def as_pg(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *cmd],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def psql(sock: str, port: int, sql: str) -> str:
    return as_pg(
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-h",
        sock,
        "-p",
        str(port),
        "-d",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ).stdout.strip()


def start_pg(data: str, sock: str, port: int, logfile: str) -> None:
    proc = as_pg(
        f"{PG_BIN}/pg_ctl",
        "-D",
        data,
        "-l",
        logfile,
        "-w",
        "-t",
        "60",
        "-o",
        f"-k {sock} -p {port} -c listen_addresses=''",
        "start",
        check=False,
    )
    if proc.returncode != 0:
        with open(logfile, errors="replace") as f:
            raise AssertionError(f"PostgreSQL did not start on {data}:\n{proc.stderr}{f.read()}")


def stop_pg(data: str) -> None:
    as_pg(f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop", check=False)


def test_checkpoint_hook_freeze_thaw_and_consistent_snapshot(tmp_path):
    # postgres must reach its directories: a world-traversable base outside tmp_path.
    base = tempfile.mkdtemp(prefix="hvguest-pg-")
    os.chmod(base, 0o755)

    def child():
        loops = LoopSet(base)
        daemon = None
        data = snap_data = None
        sock = os.path.join(base, "sock")
        os.makedirs(sock)
        shutil.chown(sock, "postgres", "postgres")
        try:
            fs = loops.make("pg", size_mb=256)
            os.chmod(fs.mountpoint, 0o755)
            data = os.path.join(fs.mountpoint, "data")
            os.makedirs(data)
            shutil.chown(data, "postgres", "postgres")
            as_pg(
                f"{PG_BIN}/initdb", "-D", data, "--data-checksums", "-A", "trust", "-U", "postgres"
            )
            start_pg(data, sock, 55432, os.path.join(sock, "live.log"))
            psql(
                sock,
                55432,
                "CREATE TABLE t (id int PRIMARY KEY, v text);"
                " INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g;",
            )
            checkpoints_before = int(
                psql(sock, 55432, "SELECT checkpoints_req FROM pg_stat_bgwriter")
            )
            with open(HOOK) as f:
                hook = f.read()
            daemon = Daemon(loops, lib_hooks={"50-postgresql": hook})
            with open(os.path.join(base, "etc", "postgresql.conf"), "w") as f:
                f.write(f'PG_TARGETS="{sock}:55432"\n')
            # Keep writing while the backup runs: those writes wait for the thaw.
            writer = subprocess.Popen(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    "psql",
                    "-X",
                    "-q",
                    "-h",
                    sock,
                    "-p",
                    "55432",
                    "-d",
                    "postgres",
                    "-c",
                    "INSERT INTO t SELECT g, 'during' FROM generate_series(50001, 60000) g",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            frozen = daemon.op(FREEZE)[0]
            snapshot = os.path.join(base, "snapshot.img")
            try:
                shutil.copyfile(fs.image, snapshot)  # the host's snapshot, taken while frozen
            finally:
                thawed = daemon.op(THAW)[0]
            writer.wait(60)
            checkpoints_after = int(
                psql(sock, 55432, "SELECT checkpoints_req FROM pg_stat_bgwriter")
            )
            psql(sock, 55432, "INSERT INTO t VALUES (70000, 'after thaw')")
            live_count = int(psql(sock, 55432, "SELECT count(*) FROM t"))

            # The snapshot: recover it as a separate server and check it.
            snap = loops.make_from_image("snap", snapshot)
            snap_data = os.path.join(snap.mountpoint, "data")
            # A restored machine has no process behind the copied lock file.
            os.unlink(os.path.join(snap_data, "postmaster.pid"))
            start_pg(snap_data, sock, 55433, os.path.join(sock, "snap.log"))
            snap_count = int(psql(sock, 55433, "SELECT count(*) FROM t"))
            amcheck = as_pg(
                f"{PG_BIN}/pg_amcheck",
                "-h",
                sock,
                "-p",
                "55433",
                "--install-missing",
                "--heapallindexed",
                "-d",
                "postgres",
                check=False,
            )
            stop_pg(snap_data)
            snap_data = None
            return (
                frozen,
                thawed,
                checkpoints_before,
                checkpoints_after,
                live_count,
                snap_count,
                amcheck.returncode,
                amcheck.stdout + amcheck.stderr,
                daemon.output(),
            )
        finally:
            if daemon is not None:
                daemon.stop()
            for d in (data, snap_data):
                if d:
                    stop_pg(d)
            loops.cleanup()

    try:
        result = in_private_ns(child, timeout=400)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    (frozen, thawed, cp_before, cp_after, live_count, snap_count, amrc, amout, output) = result
    assert frozen == OK and thawed == OK, output
    assert cp_after > cp_before, "the hook's CHECKPOINT did not run"
    assert live_count == 60001  # the writer finished after the thaw, then one more row
    assert snap_count in (50000, 60000)  # whole transactions only
    assert amrc == 0, amout
