"""Journal fields end to end: a private mount namespace with a tmpfs over /run and
a datagram socket where journald's would be."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.root, pytest.mark.system]

CLIENT = r"""
import logging, os, socket
os.makedirs("/run/systemd/journal", exist_ok=True)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
sock.settimeout(5)
from hvguest.log import setup_logging
setup_logging("hvguest-kvpd", target="journal")
logging.getLogger("hvguest.kvp").warning("pool %d rewritten", 1, extra={"HVGUEST_POOL": 1})
data = sock.recv(65536)
print(data.decode("utf-8", "replace"))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_structured_fields_reach_the_journal_socket() -> None:
    script = f"mount -t tmpfs tmpfs /run && exec {sys.executable} -c '{CLIENT}'"
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    fields = proc.stdout.splitlines()
    assert "MESSAGE=pool 1 rewritten" in fields
    assert "SYSLOG_IDENTIFIER=hvguest-kvpd" in fields
    assert "HVGUEST_POOL=1" in fields
    assert "PRIORITY=4" in fields
