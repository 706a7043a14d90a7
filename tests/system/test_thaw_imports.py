"""The emergency thaw (the VSS unit's ExecStopPost) loads only the modules it needs.

It may run with the filesystem holding the package frozen; every module it loads
is one more chance to read, or on a bad install to compile and write, there. Run
as the unit runs it: from /, no PYTHON* variables, this checkout given explicitly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# What "hvguestctl vss thaw" needs: the record, mountinfo, FITHAW, the CLI shell, the
# root check and the escaping of what it prints (both stdlib-only).
ALLOWED = {
    "hvguest", "hvguest.cli", "hvguest.cli.main", "hvguest.cli.vss", "hvguest.errors",
    "hvguest.cli.privilege", "hvguest.cli.common", "hvguest.text",
    "hvguest.roots", "hvguest.paths", "hvguest.state",
    "hvguest.files",
    "hvguest.vss", "hvguest.vss.mounts", "hvguest.vss.freeze", "hvguest.vss.record",
}
CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules)\n"
    "from hvguest.cli.main import main\n"
    "rc = main(['vss', 'thaw', '--if-frozen', '--run-dir', sys.argv[2]])\n"
    "import json; print(json.dumps([rc, sorted(set(sys.modules) - before)]))\n"
)


def test_thaw_imports_only_what_it_needs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(
        [sys.executable, "-B", "-I", "-c", CODE, str(REPO), str(tmp_path)],
        cwd="/", env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    rc, loaded = json.loads(proc.stdout.splitlines()[-1])
    assert rc == 0
    ours = {m for m in loaded if m == "hvguest" or m.startswith("hvguest.")}
    assert ours <= ALLOWED, sorted(ours - ALLOWED)
    assert not {"yaml", "pyudev", "systemd"} & {m.split(".")[0] for m in loaded}
