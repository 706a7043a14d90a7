"""``python -m bench fcopy``: file copy throughput through the simulator.

The host copies one file (256 MiB by default) in 6 KiB fragments into the guest;
each daemon runs behind the same simulated kernel and host, one after the other,
alternating over ``--runs`` rounds (absolute numbers on this kind of machine swing
a lot; only back-to-back ratios mean something):

* hvguest-fcopyd,
* the reference (``--reference``): Debian's hv_fcopy_daemon on the legacy
  transport, the upstream hv_fcopy_uio_daemon (built by scripts/setup into
  .venv/reference; ``HVGUEST_UIO_REFERENCE`` overrides) on the UIO ring,
* with ``--baseline DIR``, hvguest-fcopyd imported from the source tree DIR (a
  checkout of an earlier commit, say): before and after in the same rounds,
* a null daemon that registers and answers HV_S_OK without touching a file: the
  ceiling the harness allows,
* with ``--floor``, two minimal Python daemons that pwrite each fragment (one also
  hashes it): what the file work alone costs a Python daemon here.

Printed per daemon: median MB/s, ratio to the reference and to the ceiling, and the
daemon's CPU seconds per MB (utime + stime from /proc/PID/stat).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

from hvguest.sim.client import SimClient

MIB = 1 << 20
FRAGMENT = 6144
REFERENCE = "/usr/sbin/hv_fcopy_daemon"
UIO_REFERENCE = os.environ.get(
    "HVGUEST_UIO_REFERENCE",
    os.path.join(os.path.dirname(__file__), "..", ".venv", "reference", "hv_fcopy_uio_daemon"),
)
DEST = "/tmp"  # allowed by hvguest's default policy; the same place for every daemon

# A do-nothing daemon for the legacy device: register, then answer every message 0,
# with blocking reads like the reference (the device queues one message at a time).
NULL_DAEMON = r"""
import os, struct
fd = os.open("/dev/vmbus/hv_fcopy", os.O_RDWR)
os.write(fd, struct.pack("<i", 1))
os.read(fd, 6196)
ok = bytes(4)
while True:
    if os.read(fd, 6196):
        os.write(fd, ok)
"""


# The floor for any daemon written in Python (``--floor``): the null daemon plus
# what storing a fragment needs at the least, without a single check: pwrite from
# the message (no copy) and, as hvguest's per-file checksum, sha256. The gap to the
# null daemon is the cost of the file work itself in this harness; the gap from
# here to hvguest-fcopyd is what its checks, state and structure cost.
FLOOR_DAEMON = r"""
import hashlib, os, struct, sys
fd = os.open("/dev/vmbus/hv_fcopy", os.O_RDWR)
os.write(fd, struct.pack("<i", 1))
os.read(fd, 6196)
ok = bytes(4)
digest = hashlib.sha256() if sys.argv[1] == "sha256" else None
out = os.open("/tmp/bench.bin", os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
while True:
    m = os.read(fd, 8192)
    if len(m) == 6196 and m[0] == 1:
        offset, size = struct.unpack_from("<QI", m, 40)
        data = memoryview(m)[52 : 52 + size]
        os.pwrite(out, data, offset)
        if digest is not None:
            digest.update(data)
    os.write(fd, ok)
"""


@dataclass
class Result:
    name: str
    mbps: list[float] = field(default_factory=list)
    cpu_per_mb: list[float] = field(default_factory=list)
    ok: bool = True
    note: str = ""


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_registered(sim: SimClient) -> None:
    """The kernel fails every request until the daemon registered (legacy) or opened
    /dev/uio0 (UIO)."""
    if not sim.call("wait_registered"):
        raise AssertionError(f"the fcopy daemon did not register: {sim.state()}")


def _make_source(path: str, size: int) -> str:
    h = hashlib.sha256()
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        for off in range(0, size, MIB):
            piece = block[: min(MIB, size - off)]
            f.write(piece)
            h.update(piece)
    return h.hexdigest()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


def run_one(
    name: str, command: list[str], transport: str, source: str, digest: str, size: int, workdir: str
) -> tuple[float, float, str]:
    """One copy: (MB/s, daemon CPU s per MB, problem or "")."""
    with SimClient.start(
        command, services=("fcopy",), fcopy=transport, workdir=os.path.join(workdir, name)
    ) as sim:
        _wait_registered(sim)
        cpu0 = _cpu_seconds(sim.daemon_pid)
        t0 = time.perf_counter()
        status = sim.fcopy_send(source, DEST, "bench.bin", fragment=FRAGMENT)
        elapsed = time.perf_counter() - t0
        cpu = _cpu_seconds(sim.daemon_pid) - cpu0
        problem = "" if status == 0 else f"status {status:#x}"
        if not problem and name != "null":
            if _sha256(f"{sim.root}{DEST}/bench.bin") != digest:
                problem = "sha256 mismatch"
    mb = size / 1e6
    return mb / elapsed, cpu / mb, problem


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench fcopy", description=__doc__.split("\n")[0])
    p.add_argument(
        "--reference",
        action="store_true",
        help=f"also run {REFERENCE} (legacy) or the upstream hv_fcopy_uio_daemon (uio)",
    )
    p.add_argument("--size-mib", type=int, default=256, help="file size (default 256)")
    p.add_argument("--runs", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--transport", choices=("legacy", "uio"), default="legacy")
    p.add_argument(
        "--floor",
        action="store_true",
        help="also run minimal Python daemons that only pwrite (+ sha256) each fragment",
    )
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run hvguest-fcopyd from the hvguest package under DIR (e.g. an older checkout)",
    )
    p.add_argument("--workdir", help="keep simulator logs here (default: a temporary dir)")
    p.add_argument(
        "--no-checksum",
        action="store_true",
        help="run hvguest-fcopyd with fcopy.checksum: false (no sha256 per file)",
    )
    args = p.parse_args(argv)

    if os.geteuid() != 0:
        print("bench fcopy: needs root (the simulator uses namespaces and FUSE)", file=sys.stderr)
        return 1
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-fcopy-")
    os.makedirs(workdir, exist_ok=True)
    size = args.size_mib * MIB
    source = os.path.join(workdir, "source.bin")
    digest = _make_source(source, size)

    config = os.path.join(workdir, "hvguest.yaml")
    with open(config, "w", encoding="ascii") as f:
        f.write(f"fcopy:\n  checksum: {'false' if args.no_checksum else 'true'}\n")
    daemons: dict[str, list[str]] = {
        "hvguest": [
            sys.executable,
            "-m",
            "hvguest.daemons.fcopyd",
            "--log-target",
            "stderr",
            "--config",
            config,
        ],
    }
    if args.baseline:
        # env(1) execs: the simulator's daemon pid stays the daemon's.
        baseline = ["env", f"PYTHONPATH={os.path.abspath(args.baseline)}"]
        daemons["baseline"] = baseline + daemons["hvguest"]
    if args.reference:
        reference = REFERENCE if args.transport == "legacy" else os.path.realpath(UIO_REFERENCE)
        if not os.access(reference, os.X_OK):
            hint = (
                "apt-get install hyperv-daemons"
                if args.transport == "legacy"
                else "scripts/setup builds it; or set HVGUEST_UIO_REFERENCE"
            )
            print(f"bench fcopy: {reference} missing ({hint})", file=sys.stderr)
            return 1
        daemons["reference"] = [reference, "-n"]
    if args.floor:
        if args.transport != "legacy":
            print("bench fcopy: the floor daemons speak only the legacy device", file=sys.stderr)
            return 1
        floor_path = os.path.join(workdir, "floor_fcopy_daemon.py")
        with open(floor_path, "w", encoding="ascii") as f:
            f.write(FLOOR_DAEMON)
        daemons["py-write"] = [sys.executable, floor_path, "-"]
        daemons["py-w+sha"] = [sys.executable, floor_path, "sha256"]
    if args.transport == "legacy":
        null_path = os.path.join(workdir, "null_fcopy_daemon.py")
        with open(null_path, "w", encoding="ascii") as f:
            f.write(NULL_DAEMON)
        daemons["null"] = [sys.executable, null_path]

    results = {name: Result(name) for name in daemons}
    print(
        f"fcopy: {args.size_mib} MiB in {FRAGMENT}-byte fragments, {args.transport} transport, "
        f"{args.runs} alternating runs"
    )
    try:
        for run in range(args.runs):
            order = list(daemons) if run % 2 == 0 else list(reversed(daemons))
            for name in order:
                mbps, cpu, problem = run_one(
                    name, daemons[name], args.transport, source, digest, size, workdir
                )
                r = results[name]
                r.mbps.append(mbps)
                r.cpu_per_mb.append(cpu)
                if problem:
                    r.ok, r.note = False, problem
                print(
                    f"  run {run + 1} {name:<10} {mbps:7.1f} MB/s  {cpu * 1000:6.2f} ms CPU/MB"
                    f"{'  ' + problem if problem else ''}",
                    flush=True,
                )
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    med = {n: statistics.median(r.mbps) for n, r in results.items()}
    print()
    print(f"{'daemon':<10} {'MB/s':>8} {'vs ref':>8} {'vs ceiling':>11} {'CPU ms/MB':>10}")
    for name, r in results.items():
        vs_ref = f"{med[name] / med['reference']:.2f}x" if "reference" in med else "-"
        vs_ceil = f"{100 * med[name] / med['null']:.0f} %" if "null" in med else "-"
        cpu = statistics.median(r.cpu_per_mb) * 1000
        flag = "" if r.ok else f"  FAILED: {r.note}"
        print(f"{name:<10} {med[name]:8.1f} {vs_ref:>8} {vs_ceil:>11} {cpu:10.2f}{flag}")
    # Load changes from minute to minute: the ratio within each round (daemons run
    # back to back) is steadier than the ratio of medians.
    for other in ("reference", "baseline", "null", "py-write", "py-w+sha"):
        if other in results and len(results[other].mbps) == len(results["hvguest"].mbps):
            ratios = [
                h / o for h, o in zip(results["hvguest"].mbps, results[other].mbps, strict=True)
            ]
            shown = " ".join(f"{r:.2f}" for r in ratios)
            print(f"hvguest / {other} per round: {shown}; median {statistics.median(ratios):.2f}")
    return 0 if all(r.ok for r in results.values()) else 1
