"""KVP throughput: hvguest-kvpd vs hv_kvp_daemon vs a null daemon, through the simulator.

    python -m bench kvp [--reference] [--baseline DIR] [--runs N] [--keys N] [--records N]

Per run and daemon, in a fresh sandbox: SET of N keys (pool 0), GET of the same keys,
ENUMERATE of a pool file holding M records (pool 1, written before the first request).
Each phase is queued in the simulator as one batch: the host still sends one
transaction at a time and waits for its answer, but the benchmark's own control round
trip per request is gone, so the figures are the daemon's and the device path's.
Daemons alternate run by run; medians are reported with the ratio hvguest/reference
and each daemon's resident memory after the run. ``--baseline DIR`` adds
hvguest-kvpd imported from another source tree (an older commit, e.g. from
``git worktree add``) to the same alternating rounds; the table then also gives half
of its CPU per request (the redesign's target) beside the floor. The null daemons
register and answer every request at once without any work: "null" polls before each
read as hvguest's event loop does, "null-read" blocks in read() alone as the C daemon
does, the least any daemon can cost here (the floor).
Needs root and /dev/fuse (and hyperv-daemons for --reference).
Timing never fails anything; it is for reading.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from typing import Any

from bench.common import null_chardev_command
from hvguest.wire.kvp import KVP_MSG_SIZE, KVP_REGISTER_MSG

HVGUEST_CONFIG = "kvp:\n  publish_version: false\n"
REFERENCE = ["/usr/sbin/hv_kvp_daemon", "-n"]
MEASURES = ("SET", "GET", "ENUMERATE")
TARGETS = {"SET": 5.0, "GET": 3.5, "ENUMERATE": 2.0}
RSS_TARGET_MB = 18.0


def commands(workdir: str) -> dict[str, list[str]]:
    config = os.path.join(workdir, "hvguest.yaml")
    with open(config, "w") as f:
        f.write(HVGUEST_CONFIG)
    return {
        "hvguest": [sys.executable, "-m", "hvguest.daemons.kvpd", "--config", config],
        "reference": REFERENCE,
        "null": null_chardev_command("/dev/vmbus/hv_kvp", KVP_REGISTER_MSG, KVP_MSG_SIZE),
        "null-read": null_chardev_command(
            "/dev/vmbus/hv_kvp", KVP_REGISTER_MSG, KVP_MSG_SIZE, blocking=True
        ),
    }


def fill_pool(path: str, records: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)  # the null daemon has no pools
    with open(path, "wb") as f:
        for i in range(records):
            key = f"bench.record.{i:05d}".encode()
            value = f"value of record {i} ".encode() * 4
            f.write(key.ljust(512, b"\0") + value.ljust(2048, b"\0"))


def measure(command: list[str], keys: int, records: int, workdir: str) -> dict[str, float]:
    from bench.common import cpu_seconds, rss_mb
    from hvguest.sim.client import SimClient

    out: dict[str, float] = {}
    with SimClient.start(command, workdir=workdir) as sim:
        pid = sim.daemon_pid

        def phase(name: str, steps: list[dict[str, Any]]) -> None:
            cpu0 = cpu_seconds(pid) or 0.0
            start = time.perf_counter()
            statuses = sim.kvp_batch(steps)
            elapsed = time.perf_counter() - start
            for status in statuses:
                _check(status)
            out[name] = len(steps) / elapsed
            # daemon CPU per request: what the daemon costs, whatever the harness does
            out[name + " cpu"] = ((cpu_seconds(pid) or 0.0) - cpu0) / len(steps) * 1e6

        names = [f"bench.key.{i:05d}" for i in range(keys)]
        phase("SET", [{"op": "set", "pool": 0, "key": k, "value": f"value {k}"} for k in names])
        phase("GET", [{"op": "get", "pool": 0, "key": k} for k in names])
        fill_pool(os.path.join(sim.root, "var/lib/hyperv/.kvp_pool_1"), records)
        phase("ENUMERATE", [{"op": "enumerate", "pool": 1, "index": i} for i in range(records)])
        out["RSS"] = rss_mb(pid) or float("nan")
    return out


def _check(status: int | None) -> None:
    if status is None:
        raise RuntimeError("host request got no answer")
    if status != 0:
        raise RuntimeError(f"host request failed with status {status:#010x}")


def main(argv: list[str]) -> int:
    from bench.common import median, schedule, spread, table

    parser = argparse.ArgumentParser(prog="python -m bench kvp", description=__doc__.split("\n")[0])
    parser.add_argument("--reference", action="store_true", help="also run Debian's hv_kvp_daemon")
    parser.add_argument("--runs", type=int, default=3, help="runs per daemon (default 3)")
    parser.add_argument("--keys", type=int, default=2000, help="keys SET then GET (default 2000)")
    parser.add_argument(
        "--records", type=int, default=1000, help="records enumerated (default 1000)"
    )
    parser.add_argument("--no-null", action="store_true", help="skip the null daemons")
    parser.add_argument(
        "--baseline", metavar="DIR", help="also run hvguest-kvpd from the source tree DIR"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print("bench kvp: needs root and /dev/fuse (the simulator's sandbox)", file=sys.stderr)
        return 2
    names = ["hvguest"]
    if args.reference:
        if not os.path.exists(REFERENCE[0]):
            print(
                f"bench kvp: {REFERENCE[0]} missing (apt-get install hyperv-daemons)",
                file=sys.stderr,
            )
            return 2
        names.append("reference")
    if args.baseline:
        names.append("baseline")
    if not args.no_null:
        names += ["null", "null-read"]
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-kvp-") as tmp:
        cmds = commands(tmp)
        if args.baseline:
            tree = os.path.abspath(args.baseline)
            cmds["baseline"] = ["env", f"PYTHONPATH={tree}", *cmds["hvguest"]]
        for run, name in schedule(names, args.runs):
            r = measure(cmds[name], args.keys, args.records, os.path.join(tmp, f"{name}-{run}"))
            results[name].append(r)
            print(
                f"run {run + 1} {name:9s} "
                + "  ".join(f"{m} {r[m]:7.0f}/s" for m in MEASURES)
                + f"  RSS {r['RSS']:.1f} MB",
                flush=True,
            )
    print()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"KVP, medians of {args.runs} run(s), {args.keys} keys, {args.records} records, {stamp}")
    rows = []
    for m in MEASURES:
        row: list[object] = [f"{m} ops/s"]
        for n in names:
            values = [r[m] for r in results[n]]
            row += [median(values), spread(values)]
        if "reference" in names:
            ratio = median([r[m] for r in results["hvguest"]]) / median(
                [r[m] for r in results["reference"]]
            )
            row.append(f"{ratio:.2f}x (target {TARGETS[m]:g}x)")
        rows.append(row)
    for m in MEASURES:
        row = [f"{m} daemon CPU us/op"]
        for n in names:
            values = [r[m + " cpu"] for r in results[n]]
            row += [median(values), spread(values)]
        if "reference" in names:
            ref = median([r[m + " cpu"] for r in results["reference"]])
            ours = median([r[m + " cpu"] for r in results["hvguest"]])
            row.append(f"{ref / ours:.1f}x less CPU" if ours > 0 else "-")
        rows.append(row)
    rss_row: list[object] = ["RSS MB"]
    for n in names:
        rss_row += [median([r["RSS"] for r in results[n]]), ""]
    if "reference" in names:
        rss_row.append(f"target <= {RSS_TARGET_MB:g} MB")
    rows.append(rss_row)
    headers = ["measure"]
    for n in names:
        headers += [n, "spread"]
    if "reference" in names:
        headers.append("hvguest/reference")
    print(table(headers, rows))
    if "baseline" in names:
        print()
        print("daemon CPU per request, us: target (half of baseline) / hvguest / floor (null-read)")
        for m in MEASURES:
            figures = {n: median([r[m + " cpu"] for r in results[n]]) for n in names}
            floor = f"{figures['null-read']:.0f}" if "null-read" in figures else "-"
            half, ours = figures["baseline"] / 2, figures["hvguest"]
            print(f"  {m:9s} {half:5.0f} / {ours:5.0f} / {floor:>5s}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
