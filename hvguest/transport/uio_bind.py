"""hvguest-uio-bind: attach the fcopy VMBus device to uio_hv_generic (kernels >= 6.10).

Run as root before hvguest-fcopyd (``ExecStartPre=+`` in hvguest-fcopy.service), so
that the daemon, which parses what the host sends, never holds CAP_SYS_MODULE nor
writes to /sys: loading a module and adding a driver id are done here, by a program
that reads nothing from the host.

Exit status 0 when the device is served by uio_hv_generic afterwards, or needs no
binding (no fcopy device at all, or a kernel <= 6.9 whose hv_utils serves it as
/dev/vmbus/hv_fcopy); 1 with a message on stderr when binding failed.
"""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable

from hvguest.errors import TransportError
from hvguest.paths import Paths
from hvguest.transport.uio import (
    BIND_TIMEOUT,
    FCOPY_CLASS_ID,
    UIO_DRIVER,
    bound_driver,
    find_device,
    normalize_guid,
    uio_bound,
)

_POLL_STEP = 0.05
# The system directories modprobe lives in (root-owned): never a PATH lookup.
MODPROBE_CANDIDATES = ("/usr/sbin/modprobe", "/sbin/modprobe", "/usr/bin/modprobe")


def _default_modprobe(module: str) -> None:
    binary = next((p for p in MODPROBE_CANDIDATES if os.access(p, os.X_OK)), None)
    if binary is None:
        where = ", ".join(MODPROBE_CANDIDATES)
        raise TransportError(f"cannot load {module}: no modprobe in {where}")
    try:
        proc = subprocess.run(
            [binary, module], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TransportError(f"cannot load {module}: modprobe failed: {exc}") from exc
    if proc.returncode != 0:
        detail = proc.stderr.strip() or f"exit status {proc.returncode}"
        raise TransportError(f"cannot load {module}: {detail}")


def driver_dir(paths: Paths) -> str:
    return os.path.join(paths.sys, "bus", "vmbus", "drivers", UIO_DRIVER)


def _write_sysfs(path: str, text: str, *, ok: int) -> None:
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(text)
    except OSError as exc:
        if exc.errno == ok:
            return
        raise TransportError(f"cannot write {text} to {path}: {exc.strerror}") from exc


def _has_uio(device_dir: str) -> bool:
    try:
        return any(n.startswith("uio") for n in os.listdir(os.path.join(device_dir, "uio")))
    except OSError:
        return False


def bind(
    paths: Paths,
    device_dir: str,
    *,
    class_id: str = FCOPY_CLASS_ID,
    modprobe: Callable[[str], None] = _default_modprobe,
) -> None:
    """Attach uio_hv_generic to ``device_dir`` unless it already is."""
    if uio_bound(device_dir):
        return
    drivers = driver_dir(paths)
    if not os.path.isdir(drivers):
        modprobe(UIO_DRIVER)
        if not os.path.isdir(drivers):
            raise TransportError(f"{UIO_DRIVER} loaded but {drivers} is missing")
    # uio_hv_generic has no id table: the class id must be added (which also
    # attaches matching devices at once).
    _write_sysfs(os.path.join(drivers, "new_id"), normalize_guid(class_id), ok=errno.EEXIST)
    if bound_driver(device_dir) is None and not _has_uio(device_dir):
        # The id was already known but this device was offered later
        # (e.g. re-offered after a rescind): bind it explicitly.
        instance = os.path.basename(device_dir)
        _write_sysfs(os.path.join(drivers, "bind"), instance, ok=errno.EBUSY)


def wait_bound(device_dir: str, timeout: float) -> None:
    """The driver core attaches asynchronously: wait (bounded) for the uio entry."""
    deadline = time.monotonic() + timeout
    while not _has_uio(device_dir):
        if time.monotonic() >= deadline:
            raise TransportError(
                f"{device_dir}: no uio device appeared within {timeout:g} s of binding"
                f" {UIO_DRIVER}"
            )
        time.sleep(_POLL_STEP)


def bind_fcopy(
    paths: Paths,
    *,
    modprobe: Callable[[str], None] = _default_modprobe,
    timeout: float = BIND_TIMEOUT,
) -> str:
    """Bind the fcopy device if it needs it; returns what was done (for the log)."""
    if os.path.exists(paths.vmbus_device("hv_fcopy")):
        return f"{paths.vmbus_device('hv_fcopy')} exists: hv_utils serves fcopy, nothing to bind"
    device_dir = find_device(paths, FCOPY_CLASS_ID)
    if device_dir is None:
        return "the host offers no fcopy device (Guest Service Interface): nothing to bind"
    driver = bound_driver(device_dir)
    if driver == "hv_utils":
        return f"{device_dir} is served by hv_utils (kernel <= 6.9): nothing to bind"
    if driver == UIO_DRIVER and _has_uio(device_dir):
        return f"{device_dir} is already bound to {UIO_DRIVER}"
    bind(paths, device_dir, modprobe=modprobe)
    wait_bound(device_dir, timeout)
    return f"{device_dir} bound to {UIO_DRIVER}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hvguest-uio-bind",
        description="Bind the Hyper-V file copy device to uio_hv_generic (kernels >= 6.10);"
        " run as root by hvguest-fcopy.service before hvguest-fcopyd.",
    )
    parser.add_argument("--sys-root", default="/sys", help=argparse.SUPPRESS)
    parser.add_argument("--dev-root", default="/dev", help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", help="say nothing on success")
    args = parser.parse_args(argv)
    paths = Paths(sys=args.sys_root, dev=args.dev_root)
    try:
        done = bind_fcopy(paths)
    except TransportError as exc:
        print(f"hvguest-uio-bind: {exc}", file=sys.stderr, flush=True)
        return 1
    if not args.quiet:
        print(f"hvguest-uio-bind: {done}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
