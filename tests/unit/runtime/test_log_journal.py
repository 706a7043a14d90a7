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


DIFFERENTIAL = r"""
import array, json, logging, os, re, socket, struct, sys
os.makedirs("/run/systemd/journal", exist_ok=True)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
sock.settimeout(5)
from systemd.journal import JournalHandler as Reference
from hvguest.journal import JournalHandler as Ours

def receive():
    data, fds, _flags, _addr = socket.recv_fds(sock, 16 << 20, 1)
    for fd in fds:  # the memfd of a record too large for a datagram
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        os.close(fd)
    fields, i = [], 0
    while i < len(data):
        end = data.index(b"\n", i)
        line = data[i:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = end + 1
        else:
            key = line
            size = struct.unpack("<Q", data[end + 1:end + 9])[0]
            value = data[end + 9:end + 9 + size]
            i = end + 9 + size + 1
        fields.append([key.decode(), value.decode("utf-8", "replace")])
    return fields + [["(memfd)", str(len(fds))]]

kept = re.compile(r"[A-Z][A-Z0-9_]{0,63}")  # what journald keeps of a native message
log = logging.getLogger("hvguest.kvp")
records = [
    log.makeRecord("hvguest.kvp", logging.WARNING, "/x/pool.py", 12, "pool %d rewritten",
                   (1,), None, "rewrite", {"HVGUEST_POOL": 1, "HVGUEST_KEY": "a\nb"}),
    log.makeRecord("hvguest.kvp", logging.INFO, "/x/p.py", 3, "plain: é 日本", (), None),
    log.makeRecord("hvguest.kvp", 5, "/x/p.py", 3, "below debug", (), None),
    log.makeRecord("hvguest.kvp", 60, "/x/p.py", 3, "x" * 300000, (), None),
    log.makeRecord("hvguest.kvp", 60, "/x/p.py", 3, "y" * (9 << 20), (), None),
]
try:
    raise ValueError("bad\nthing")
except ValueError:
    records.append(log.makeRecord("hvguest.vss", logging.ERROR, "/x/v.py", 9, "failed %s",
                                  ("it",), sys.exc_info()))
out = []
for record in records:
    for cls in (Reference, Ours):
        cls(SYSLOG_IDENTIFIER="hvguest-kvpd").handle(record)
    reference = [f for f in receive() if kept.fullmatch(f[0]) or f[0] == "(memfd)"]
    ours = receive()
    out.append([reference, ours])
print(json.dumps(out))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_our_journal_handler_sends_what_python_systemd_sends() -> None:
    # The same records through python-systemd's handler (libsystemd) and ours: every
    # field journald keeps, in the same order with the same value; 300 kB still as one
    # datagram, 9 MB (past the 8 MB send buffer) as a memfd, from both.
    import json

    script = f"mount -t tmpfs tmpfs /run && exec {sys.executable} -c '{DIFFERENTIAL}'"
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    pairs = json.loads(proc.stdout.splitlines()[-1])
    assert len(pairs) == 6
    for reference, ours in pairs:
        assert ours == reference
    assert ["HVGUEST_KEY", "a\nb"] in pairs[0][1]
    assert ["PRIORITY", "7"] in pairs[2][1] and ["PRIORITY", "1"] in pairs[3][1]
    assert any(k == "EXCEPTION_TEXT" and "bad\nthing" in v for k, v in pairs[5][1])
    assert [["(memfd)", "1" if n == 4 else "0"] for n in range(6)] == [
        [f for f in ours if f[0] == "(memfd)"][0] for _reference, ours in pairs
    ]
