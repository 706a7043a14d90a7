"""Whether the installed hvguest daemons take the simulator's CUSE devices.

hvguest's udev rules leave CUSE devices (SUBSYSTEM "cuse"; hv_utils' devices are
"misc") alone unless they carry HVGUEST_SIM_DRIVE=1, so a simulator run on a real
guest never feeds a simulated host's requests to the installed daemons. Asked
explicitly (``hvguest-sim serve --frontend cuse --drive-installed``, e.g. in a test
VM), the simulator sets that property on its devices through a runtime rule,
removed again when it stops.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

RULES_DIR = "/run/udev/rules.d"
RULE_NAME = "59-hvguest-sim-drive.rules"  # before hvguest's 60-hvguest.rules
RULE = (
    "# hvguest-sim serve --drive-installed: the installed hvguest daemons serve the\n"
    "# simulator's CUSE devices. Removed when the simulator stops.\n"
    'SUBSYSTEM=="cuse", KERNEL=="vmbus!hv_*|vmbus/hv_*", ENV{HVGUEST_SIM_DRIVE}="1"\n'
)


def _reload() -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["udevadm", "control", "--reload"], capture_output=True, timeout=30,
                       check=False)


def install(rules_dir: str = RULES_DIR) -> str:
    """Write the rule (replacing a stale one of ours) and make udev read it."""
    os.makedirs(rules_dir, mode=0o755, exist_ok=True)
    path = os.path.join(rules_dir, RULE_NAME)
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(RULE)
    os.rename(tmp, path)
    _reload()
    return path


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    _reload()
