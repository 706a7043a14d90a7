"""VSS FREEZE/THAW latency: hvguest-vssd vs hv_vss_daemon vs a null daemon.

    python -m bench vss [--reference] [--runs N] [--cycles N]

Each daemon runs in the simulator's sandbox with three loop-mounted 64 MiB ext4
filesystems. A cycle writes 4 MiB of dirty (unsynced) data to each, then times the
host's FREEZE and THAW round trips. Daemons alternate run by run (absolute numbers
drift with machine load; only back-to-back ratios count); medians are reported.
The null daemon registers and answers every request at once: the harness ceiling.
Needs root, /dev/fuse and (for --reference) Debian's hyperv-daemons.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import null_chardev_command

MOUNTS = ("/mnt/bench-1", "/mnt/bench-2", "/mnt/bench-3")
DIRTY_MB = 4
HVGUEST = [sys.executable, "-m", "hvguest.daemons.vssd", "--log-target", "stderr"]
REFERENCE = ["/usr/sbin/hv_vss_daemon", "-n"]
NULL = null_chardev_command("/dev/vmbus/hv_vss", bytes([129]) + bytes(11), 12)


def _images(workdir: str) -> list[tuple[str, str, str]]:
    os.makedirs(workdir, exist_ok=True)
    out = []
    for i, mnt in enumerate(MOUNTS):
        image = os.path.join(workdir, f"bench{i}.img")
        with open(image, "wb") as f:
            f.truncate(64 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, timeout=60)
        out.append((image, "ext4", mnt))
    return out


def measure(command: list[str], cycles: int, workdir: str) -> tuple[list[float], list[float]]:
    from hvguest.sim.client import SimClient

    freezes: list[float] = []
    thaws: list[float] = []
    with SimClient.start(
        command,
        services=("vss",),
        loop_filesystems=_images(workdir),
        network=False,
        workdir=workdir,
    ) as sim:
        try:
            for cycle in range(cycles):
                for mnt in MOUNTS:
                    r = sim.exec(
                        [
                            "dd",
                            "if=/dev/urandom",
                            f"of={mnt}/dirty{cycle % 2}",
                            "bs=1M",
                            f"count={DIRTY_MB}",
                            "status=none",
                        ]
                    )
                    if r.returncode != 0:
                        raise RuntimeError(f"dirtying {mnt} failed: {r.stderr!r}")
                t0 = time.perf_counter()
                status = sim.vss_freeze()
                t1 = time.perf_counter()
                status2 = sim.vss_thaw()
                t2 = time.perf_counter()
                if status != 0 or status2 != 0:
                    tail = "\n".join(sim.syslog()[-6:] + sim.kernel_log()[-6:])
                    raise RuntimeError(
                        f"{command[0]}: FREEZE {status:#x} THAW {status2:#x}"
                        f" in cycle {cycle}:\n{tail}"
                    )
                # The simulator drains its /dev/log socket on request; a full queue
                # would block a daemon that logs through syslog(3) (the reference).
                sim.syslog()
                freezes.append((t1 - t0) * 1000)
                thaws.append((t2 - t1) * 1000)
        finally:
            for mnt in MOUNTS:
                sim.exec(["fsfreeze", "--unfreeze", mnt])
    return freezes, thaws


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench vss",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--reference", action="store_true", help="also run /usr/sbin/hv_vss_daemon")
    p.add_argument("--runs", type=int, default=3, help="alternating runs per daemon (3)")
    p.add_argument("--cycles", type=int, default=5, help="FREEZE/THAW cycles per run (5)")
    args = p.parse_args(argv)
    daemons = {"hvguest-vssd": HVGUEST}
    if args.reference:
        if not os.path.exists(REFERENCE[0]):
            print(
                f"{REFERENCE[0]} is not installed (apt-get install hyperv-daemons)", file=sys.stderr
            )
            return 1
        daemons["hv_vss_daemon"] = REFERENCE
    daemons["null daemon"] = NULL
    results: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in daemons}
    with tempfile.TemporaryDirectory(prefix="hvguest-bench-vss-") as tmp:
        entries = list(daemons.items())
        for run in range(args.runs):
            # Rotate the order run by run, so no daemon always goes first (cold caches)
            # or last (a machine slowing down).
            shift = run % len(entries)
            for name, command in entries[shift:] + entries[:shift]:
                workdir = os.path.join(tmp, f"{run}-{name.replace(' ', '-')}")
                f, t = measure(command, args.cycles, workdir)
                results[name][0].extend(f)
                results[name][1].extend(t)
                print(
                    f"run {run + 1} {name:<13} FREEZE median {statistics.median(f):8.2f} ms"
                    f"  THAW median {statistics.median(t):6.2f} ms",
                    flush=True,
                )
    print()
    print(f"{'daemon':<14} {'FREEZE ms (median, min-max)':>30} {'THAW ms (median, min-max)':>28}")
    med = {}
    for name, (f, t) in results.items():
        med[name] = (statistics.median(f), statistics.median(t))
        print(
            f"{name:<14} {med[name][0]:>10.2f} ({min(f):7.2f}-{max(f):7.2f})"
            f"    {med[name][1]:>10.2f} ({min(t):6.2f}-{max(t):6.2f})"
        )
    ours_f, ours_t = med["hvguest-vssd"]
    ok = ours_t <= 5.0
    print(f"\nTHAW target <= 5 ms: {ours_t:.2f} ms {'met' if ours_t <= 5.0 else 'MISSED'}")
    if "hv_vss_daemon" in med:
        ratio = ours_f / med["hv_vss_daemon"][0]
        ok = ok and ratio <= 1.1
        print(
            f"FREEZE ratio hvguest/reference: {ratio:.2f} (target <= 1.10:"
            f" {'met' if ratio <= 1.1 else 'MISSED'})"
        )
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
