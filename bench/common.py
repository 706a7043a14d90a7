"""Helpers shared by the benchmarks: alternating runs, medians, memory, tables.

Absolute numbers on a shared machine drift by a factor of several within minutes, so
candidates run back to back in alternating order and only medians and ratios of the
same run are reported.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence


def schedule(names: Sequence[str], runs: int) -> list[tuple[int, str]]:
    """(run, name) pairs; the order rotates each run so no candidate always goes first."""
    order = []
    for run in range(runs):
        shift = run % len(names)
        for name in list(names[shift:]) + list(names[:shift]):
            order.append((run, name))
    return order


def rate(count: int, fn: Callable[[int], None]) -> float:
    """Operations per second of ``fn(i)`` for i in range(count)."""
    start = time.perf_counter()
    for i in range(count):
        fn(i)
    elapsed = time.perf_counter() - start
    return count / elapsed if elapsed > 0 else float("inf")


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` (VmRSS) in MB, None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (its threads included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.0f}-{max(values):.0f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return str(value)


def null_chardev_command(
    device: str, register: bytes, size: int, *, blocking: bool = False
) -> list[str]:
    """The command of a null daemon for a hv_utils character device: the harness's
    own ceiling. Run by file: the sandbox's working directory is not this checkout.
    ``blocking``: read without polling first (see ``null_chardev_daemon``)."""
    return [
        sys.executable,
        os.path.abspath(__file__),
        "--null-daemon",
        device,
        register.hex(),
        str(size),
        "blocking" if blocking else "poll",
    ]


def null_chardev_daemon(device: str, register: bytes, size: int, blocking: bool) -> int:
    """Register on ``device`` and answer every ``size``-byte request at once with
    status 0 over its first 4 bytes, the rest echoed (KVP and VSS reply that way).

    Polled (the default), it is the cheapest daemon that, like hvguest's, also waits
    for timers, signals and other descriptors. ``blocking`` waits in read() alone
    (the kernel's read blocks until a message is queued), as the C daemons do: the
    cheapest any daemon can be, one system call less per request."""
    import select

    fd = os.open(device, os.O_RDWR)
    os.write(fd, register)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.poll()
    os.read(fd, size)  # the registration echo
    while True:
        if not blocking:
            poller.poll()
        msg = os.read(fd, size)
        if msg:
            os.write(fd, bytes(4) + msg[4:size].ljust(size - 4, b"\0"))


if __name__ == "__main__" and sys.argv[1:2] == ["--null-daemon"]:
    sys.exit(
        null_chardev_daemon(
            sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "blocking"
        )
    )
