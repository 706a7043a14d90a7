"""Have the real systemd-networkd parse .network files, without touching the machine.

systemd-networkd runs in a fresh network and mount namespace (``unshare``) where a tmpfs
hides /run/systemd and the files to check are bind-mounted over /etc/systemd/network.
It loads every .network file at start-up and logs each line it cannot use
("Unknown key", "Failed to parse ..."), with file and line, before it looks at the
links; once it reports the namespace's loopback link, loading is over and it is
stopped. Nothing outside the namespaces changes: the only link it sees is that ``lo``.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import time

NETWORKD = "/lib/systemd/systemd-networkd"
# Logged once the .network files are loaded: enumeration of the links has begun.
LOADED = re.compile(r"^lo: Saved new link")


def unavailable() -> str | None:
    """Why the check cannot run here (None if it can)."""
    if os.geteuid() != 0:
        return "needs root for a private network and mount namespace"
    if not os.access(NETWORKD, os.X_OK) or not shutil.which("unshare"):
        return f"needs {NETWORKD} and unshare"
    if not os.path.isdir("/etc/systemd/network") or not os.path.isdir("/run/systemd"):
        return "needs /etc/systemd/network and /run/systemd to mount over"
    return None


SENTINEL = "zz-hvguest-sentinel.network"


def complaints(directory: str, timeout: float = 20.0) -> list[str]:
    """networkd's log lines about the files in ``directory`` (empty: all understood).

    networkd reads its files after dropping to its own user: the directory and files
    are made readable to it. A sentinel file with one unknown key proves that this run
    did read the directory; its complaint is required, then left out of the result.
    """
    os.chmod(directory, 0o755)
    for name in os.listdir(directory):
        os.chmod(os.path.join(directory, name), 0o644)
    sentinel = os.path.join(directory, SENTINEL)
    with open(sentinel, "w") as f:
        f.write("[Match]\nName=hvguest-none\n\n[Network]\nHvguestSentinel=yes\n")
    os.chmod(sentinel, 0o644)
    try:
        found = _run(directory, timeout)
    finally:
        os.unlink(sentinel)
    mine = [line for line in found if SENTINEL in line]
    assert len(mine) == 1 and "Unknown key 'HvguestSentinel'" in mine[0], found
    return [line for line in found if SENTINEL not in line]


def _run(directory: str, timeout: float) -> list[str]:
    script = (
        "set -e; mount --make-rprivate /; mount -t tmpfs tmpfs /run/systemd; "
        f"mount --bind '{directory}' /etc/systemd/network; "
        f"exec env SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_LEVEL=debug {NETWORKD}"
    )
    proc = subprocess.Popen(
        ["unshare", "--net", "--mount", "--fork", "sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while not any(LOADED.match(line) for line in lines):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"systemd-networkd did not load its files: {lines[-20:]}")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"systemd-networkd exited {proc.wait()}: {lines[-20:]}")
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [d.decode("utf-8", "replace") for d in done]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return [line for line in lines if line.startswith("/etc/systemd/network/")]
