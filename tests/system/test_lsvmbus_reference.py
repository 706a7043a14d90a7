"""lsvmbus beside the kernel's own tools/hv/lsvmbus (the program Fedora's hyperv-tools
ships and Microsoft's validation suite parses), on the same fixture VMBus trees: the
outputs must be identical for every verbosity.

The original reads /sys/bus/vmbus/devices only, so both run in a private mount
namespace with a tmpfs over /sys/bus holding the fixture tree (the machine's real
/sys/bus is untouched). scripts/setup extracts the original from Debian's
linux-source package into .venv/reference/lsvmbus; none of it is in this repository.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hvguest.paths import Paths

pytestmark = [pytest.mark.root, pytest.mark.system]

REPO = Path(__file__).resolve().parents[2]
ORIGINAL = Path(os.environ.get("HVGUEST_LSVMBUS_REFERENCE", REPO / ".venv/reference/lsvmbus"))

sys.path.insert(0, str(REPO / "tests/fixtures/sysfs"))
import sysfs_builder  # noqa: E402

SPLIT = "--- hvguest lsvmbus ---\n"


def both(paths: Paths, args: str) -> tuple[str, str]:
    script = (
        "set -e; mount --make-rprivate /; mount -t tmpfs hvguest-lsvmbus /sys/bus; "
        f"cp -a {shlex.quote(paths.sys)}/bus/vmbus /sys/bus/; "
        f"/usr/bin/python3 {shlex.quote(str(ORIGINAL))} {args}; "
        f"printf %s {shlex.quote(SPLIT)}; "
        f"{shlex.quote(sys.executable)} -m hvguest.cli.lsvmbus {args}"
    )
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=120, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr
    original, ours = proc.stdout.split(SPLIT)
    return original, ours


TREES: dict[str, Callable[[str], Paths]] = {
    "gen1-6.1": lambda d: sysfs_builder.build(d, gen=1, kernel="6.1"),
    "gen2-6.12-uio": lambda d: sysfs_builder.build(d, gen=2, kernel="6.12"),
    "gen2-unknown-class": lambda d: sysfs_builder.build(d, gen=2, extra_unknown=True),
}


@pytest.mark.skipif(not ORIGINAL.exists(), reason=f"needs the kernel's lsvmbus at {ORIGINAL} "
                    "(scripts/setup extracts it from Debian's linux-source-6.12)")
@pytest.mark.parametrize("tree", sorted(TREES))
def test_output_identical_to_the_kernels_lsvmbus(tree: str, tmp_path: Path) -> None:
    paths = TREES[tree](str(tmp_path / "m"))
    for args in ("", "-v", "-vv", "-vvv", "--verbose"):
        original, ours = both(paths, args)
        assert original.startswith("VMBUS ID "), original
        assert ours == original, f"lsvmbus {args}:\n--- original\n{original}\n--- ours\n{ours}"
