"""The CUSE front end's protocol handling, without a kernel: requests are fed to
the server's dispatcher and its replies captured (the real /dev/cuse is exercised
by the QEMU tier, test_vm.py)."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Iterator

import pytest

from hvguest.sim import fuse_proto as fp
from hvguest.sim.cuse import CUSE_INIT, CUSE_INIT_OUT, CuseDeviceServer, device_info
from hvguest.sim.device import WOULD_BLOCK


class EchoDevice:
    """Exclusive open; a write queues the data for the next read."""

    name = "hv_test"

    def __init__(self) -> None:
        self.opened: int | None = None
        self.queue: list[bytes] = []
        self.waker: Callable[[], None] = lambda: None

    def open(self, handle: int) -> int:
        if self.opened is not None:
            return -errno.EBUSY
        self.opened = handle
        return 0

    def read(self, handle: int, size: int) -> bytes | int:
        return self.queue.pop(0) if self.queue else WOULD_BLOCK

    def write(self, handle: int, data: bytes) -> int:
        self.queue.append(data)
        self.waker()
        return len(data)

    def poll(self, handle: int) -> int:
        return 0x41 if self.queue else 0

    def release(self, handle: int) -> None:
        self.opened = None

    def set_waker(self, waker: Callable[[], None]) -> None:
        self.waker = waker


class Recorder(CuseDeviceServer):
    device_path = "/dev/null"  # no kernel: requests come from the test

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.sent: list[bytes] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _send_raw(self, data: bytes) -> None:
        self.sent.append(data)


def request(opcode: int, unique: int, body: bytes, nodeid: int = 0) -> bytes:
    return fp.IN_HEADER.pack(fp.IN_HEADER.size + len(body), opcode, unique, nodeid,
                             0, 0, 1, 0, 0) + body


def reply(data: bytes) -> tuple[int, int, bytes]:
    length, error, unique = fp.OUT_HEADER.unpack_from(data)
    assert length == len(data)
    return error, unique, data[fp.OUT_HEADER.size:]


@pytest.fixture
def server() -> Iterator[Recorder]:
    srv = Recorder("hv_test", EchoDevice(), devname="vmbus/hv_test")
    yield srv
    srv.close()


def test_cuse_init_names_the_device(server: Recorder) -> None:
    server._dispatch(request(CUSE_INIT, 1, struct.pack("=IIII", 7, 38, 0, 0)))
    error, unique, body = reply(server.sent[-1])
    assert (error, unique) == (0, 1)
    out = CUSE_INIT_OUT.unpack_from(body)
    assert out[0] == 7 and out[1] == 38  # protocol 7.38 echoed back
    assert out[6:8] == (0, 0)  # the kernel picks the device number
    assert body[CUSE_INIT_OUT.size:] == b"DEVNAME=vmbus/hv_test\0"
    assert server.initialised


def test_cuse_init_refuses_an_old_protocol(server: Recorder) -> None:
    server._dispatch(request(CUSE_INIT, 2, struct.pack("=IIII", 7, 10, 0, 0)))
    error, _unique, _body = reply(server.sent[-1])
    assert error == -errno.EPROTO
    assert not server.initialised


def test_requests_for_node_zero_reach_the_device(server: Recorder) -> None:
    server._dispatch(request(fp.OPEN, 3, fp.OPEN_IN.pack(2, 0)))
    error, _u, body = reply(server.sent[-1])
    assert error == 0
    fh = fp.OPEN_OUT.unpack_from(body)[0]
    # A second opener is refused, as by the kernel's misc device.
    server._dispatch(request(fp.OPEN, 4, fp.OPEN_IN.pack(2, 0)))
    assert reply(server.sent[-1])[0] == -errno.EBUSY
    # A read with nothing queued is parked, then answered when a write arrives.
    server._dispatch(request(fp.READ, 5, fp.READ_IN.pack(fh, 0, 4096, 0, 0, 0, 0)))
    count = len(server.sent)
    payload = b"hello"
    server._dispatch(request(fp.WRITE, 6, fp.WRITE_IN.pack(fh, 0, len(payload), 0, 0, 0, 0)
                             + payload))
    replies = {reply(d)[1]: reply(d) for d in server.sent[count:]}
    assert replies[6][0] == 0 and fp.WRITE_OUT.unpack_from(replies[6][2])[0] == 5
    assert replies[5][0] == 0 and replies[5][2] == b"hello"
    server._dispatch(request(fp.RELEASE, 7, fp.RELEASE_IN.pack(fh, 0, 0, 0)))
    assert reply(server.sent[-1])[:2] == (0, 7)


def test_device_names_are_checked() -> None:
    assert device_info("vmbus/hv_kvp") == b"DEVNAME=vmbus/hv_kvp\0"
    for bad in ("", "/dev/vmbus/hv_kvp", "vmbus/../null", "a\0b"):
        with pytest.raises(ValueError):
            device_info(bad)
