"""The rootless front end (``--dev-root``): char devices as SOCK_SEQPACKET sockets.

Runs without root: the "daemon" is a few lines of stdlib Python that registers on
``DIR/vmbus/hv_kvp`` and answers requests, so the kernel model, the host and the
control protocol are exercised end to end without a sandbox.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

from hvguest.sim.client import SimClient

MINI_KVPD = r"""
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1] + "/vmbus/hv_kvp")
s.send(bytes([100]) + bytes(7431))
echo = s.recv(8192)
assert echo[0] == 100 and echo[4:7] == b"3.1", echo[:8]
store = {}
while True:
    msg = s.recv(8192)
    if not msg:
        break
    op, pool = msg[0], msg[1]
    out = bytearray(7432)
    if op == 1:  # SET
        ksize, vsize = struct.unpack_from("<II", msg, 8)
        store[msg[16:16 + ksize - 1]] = msg[528:528 + vsize - 1]
    elif op == 3:  # ENUMERATE
        index = struct.unpack_from("<I", msg, 4)[0]
        items = list(store.items())
        if index < len(items):
            key, value = items[index]
            out[20:20 + len(key)] = key
            out[532:532 + len(value)] = value
        else:
            out[0:4] = struct.pack("<I", 0x80070103)
    s.send(bytes(out))
"""


def test_rootless_kvp_round_trip(tmp_path: str) -> None:
    dev = os.path.join(tmp_path, "dev")
    with SimClient.start([sys.executable, "-c", MINI_KVPD, dev], dev_root=dev,
                         workdir=os.path.join(tmp_path, "sim"), start_timeout=30) as sim:
        assert sim.rootless
        assert sim.kvp_set(0, "ключ", "значение") == 0
        assert sim.kvp_set(0, "n", 7, "REG_U32") == 0
        assert sim.kvp_enumerate_all(0) == [("ключ", "значение"), ("n", "7")]
        # A second opener is refused: the simulator closes the connection at once.
        other = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        other.connect(os.path.join(dev, "vmbus", "hv_kvp"))
        other.settimeout(5)
        assert other.recv(16) == b""
        other.close()
        assert sim.daemon_alive()
        # The raw path works through sockets too.
        reply = sim.kvp_raw(struct.pack("<BB", 3, 0) + bytes(7430))
        assert reply[20:26] == "ключ".encode()[:6]
