"""UioTransport on a fake sysfs tree: discovery, ring size, packets (binding is
hvguest-uio-bind's: tests/unit/transport/test_uio_bind.py).

The ring memory is a regular file (mapped by both the transport and the fake
host); the /dev/uioN control fd is one end of a SOCK_SEQPACKET socketpair so
that read(4)/write(int32) and poll behave like the UIO device.
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from hvguest.errors import TransportError
from hvguest.paths import Paths
from hvguest.transport.ring import RingBuffer
from hvguest.transport.uio import FCOPY_CLASS_ID, DeviceNotBound, UioTransport
from hvguest.transport.uio_ring import CorruptPacket, RingAbandoned

INSTANCE = "eb765408-105f-49b6-b4aa-c123b64d17d4"
RING = 0x5000


@dataclass
class FakeSys:
    root: str
    paths: Paths
    device: str
    ring_file: str
    modprobed: list[str] = field(default_factory=list)
    host_end: socket.socket | None = None

    @property
    def driver_dir(self) -> str:
        return os.path.join(self.paths.sys, "bus", "vmbus", "drivers", "uio_hv_generic")

    def add_device(self, instance: str, class_id: str) -> str:
        d = os.path.join(self.paths.vmbus_devices, instance)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "class_id"), "w") as f:
            f.write("{" + class_id + "}\n")
        return d

    def attach(self, map_size: str | None = f"0x{2 * RING:016x}") -> None:
        """What binding does in the kernel: driver link + uio0 + map0/size."""
        os.makedirs(self.driver_dir, exist_ok=True)
        link = os.path.join(self.device, "driver")
        if not os.path.islink(link):
            os.symlink(self.driver_dir, link)
        maps = os.path.join(self.device, "uio", "uio0", "maps", "map0")
        os.makedirs(maps, exist_ok=True)
        if map_size is not None:
            # Atomically: a sysfs attribute is never seen empty.
            with open(os.path.join(maps, ".size"), "w") as f:
                f.write(map_size + "\n")
            os.rename(os.path.join(maps, ".size"), os.path.join(maps, "size"))


@pytest.fixture
def fake(tmp_path: os.PathLike[str]) -> Iterator[FakeSys]:
    root = str(tmp_path)
    paths = Paths(sys=os.path.join(root, "sys"), dev=os.path.join(root, "dev"))
    os.makedirs(paths.dev)
    fs = FakeSys(root, paths, "", os.path.join(paths.dev, "uio0"))
    fs.add_device("242ff919-07db-4180-9c2e-b86cb68c8c55", "57164f39-9115-4e78-ab55-382f3bd5422d")
    fs.device = fs.add_device(INSTANCE, FCOPY_CLASS_ID.upper())
    with open(fs.ring_file, "wb") as f:
        f.truncate(2 * RING)
    yield fs
    if fs.host_end is not None:
        fs.host_end.close()


class FakeUio(UioTransport):
    """Control fd = socketpair end; ring memory = the regular file."""

    def __init__(self, fs: FakeSys, **kw: object) -> None:
        super().__init__(fs.paths, **kw)  # type: ignore[arg-type]
        self.fs = fs
        self.opened: list[str] = []

    def _open_node(self, node: str) -> int:
        self.opened.append(node)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.fs.host_end = theirs
        return ours.detach()

    def _map_rings(self, fd: int, length: int) -> mmap.mmap:
        with open(self.fs.ring_file, "r+b") as f:
            return mmap.mmap(f.fileno(), length)


class Host:
    """The host's view: writes RX (second half), reads TX (first half)."""

    def __init__(self, fs: FakeSys) -> None:
        self.file = open(fs.ring_file, "r+b")
        self.map = mmap.mmap(self.file.fileno(), 2 * RING)
        view = memoryview(self.map)
        self.tx = RingBuffer(view[:RING], RING, name="host view of TX")
        self.rx = RingBuffer(view[RING:], RING, name="host view of RX")
        view.release()
        assert fs.host_end is not None
        self.ctl = fs.host_end
        self.count = 0

    def send(self, payload: bytes, trans_id: int, *, interrupt: bool = True) -> None:
        self.rx.write_packet(payload, trans_id)
        if interrupt:
            self.rx.interrupt_mask = 1  # the kernel masks on interrupt
            self.count += 1
            self.ctl.send(struct.pack("<I", self.count))

    def close(self) -> None:
        self.tx.release()
        self.rx.release()
        self.map.close()
        self.file.close()


def test_discovery_by_class_id_and_ring_size(fake: FakeSys) -> None:
    fake.attach()
    t = FakeUio(fake).open()
    try:
        assert t.device_dir == fake.device
        assert t.uio_name == "uio0"
        assert t.ring_size == RING
        assert t.opened == [os.path.join(fake.paths.dev, "uio0")]
        assert fake.modprobed == []
        assert t.rx is not None and t.rx.interrupt_mask == 0
    finally:
        t.close()


def test_not_offered(fake: FakeSys) -> None:
    t = FakeUio(fake, class_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(TransportError, match="does not offer the Guest Service Interface"):
        t.open()


def test_unbound_device_is_not_bound_by_the_daemon(fake: FakeSys) -> None:
    """The daemon waits for hvguest-uio-bind: it never loads a module or writes
    new_id/bind itself (it runs without CAP_SYS_MODULE and with /sys read-only)."""
    with pytest.raises(DeviceNotBound, match="not bound to uio_hv_generic; hvguest-uio-bind"):
        FakeUio(fake).open()
    assert not os.path.exists(fake.driver_dir)
    assert fake.modprobed == []


def test_open_waits_for_uio_after_binding(fake: FakeSys) -> None:
    os.makedirs(fake.driver_dir)
    os.symlink(fake.driver_dir, os.path.join(fake.device, "driver"))
    t = FakeUio(fake)
    timer = threading.Timer(0.15, fake.attach)
    timer.start()
    try:
        t.open()
        assert t.ring_size == RING
    finally:
        timer.join()
        t.close()


def test_no_uio_within_timeout(fake: FakeSys) -> None:
    os.makedirs(fake.driver_dir)
    os.symlink(fake.driver_dir, os.path.join(fake.device, "driver"))
    t = FakeUio(fake, bind_timeout=0.1)
    with pytest.raises(TransportError, match="no uio device with a ring map appeared within 0.1 s"):
        t.open()


def test_bound_to_another_driver(fake: FakeSys) -> None:
    other = os.path.join(fake.paths.sys, "bus", "vmbus", "drivers", "hv_utils")
    os.makedirs(other)
    os.symlink(other, os.path.join(fake.device, "driver"))
    with pytest.raises(TransportError, match="bound to hv_utils"):
        FakeUio(fake).open()


@pytest.mark.parametrize("size", ["0x0000000000001000", "zz", "0x0000000000009001"])
def test_bad_ring_sizes(fake: FakeSys, size: str) -> None:
    fake.attach(map_size=size)
    with pytest.raises(TransportError):
        FakeUio(fake).open()


def test_ring_size_falls_back_to_channel_ring_file(fake: FakeSys) -> None:
    fake.attach(map_size=None)
    ch = os.path.join(fake.device, "channels", "14")
    os.makedirs(ch)
    with open(os.path.join(ch, "ring"), "wb") as f:
        f.truncate(0xA000)
    t = FakeUio(fake)
    assert t.read_ring_size(fake.device, "uio0") == 0x5000


def test_exchange_wait_drain_reply_signal(fake: FakeSys) -> None:
    """What hvguest-fcopyd does on the ring: wait for the interrupt, answer every
    queued packet in place, signal the host (which also unmasks RX interrupts)."""
    fake.attach()
    t = FakeUio(fake).open()
    host = Host(fake)
    try:
        host.send(b"negotiate" + bytes(7), 11, interrupt=False)
        host.send(b"second packet!!!", 12)
        t.wait_interrupt()
        assert t.interrupts == 1
        seen: list[bytes] = []

        def answer(payload: memoryview) -> bytes | int | None:
            seen.append(bytes(payload))
            return b"reply" if payload[0] == ord("n") else None

        assert t.drain(answer) == 1
        assert seen == [b"negotiate" + bytes(7), b"second packet!!!"]
        assert host.rx.available == 0  # both consumed, answered or not
        got = host.tx.read_packet()
        assert got is not None
        assert got[0].trans_id == 11 and got[1] == b"reply\0\0\0"
        # Once RX is empty the drain re-arms: the unmask write signals the host.
        assert fake.host_end is not None
        assert fake.host_end.recv(16) == struct.pack("<i", 1)
    finally:
        host.close()
        t.close()


def test_packet_queued_while_masked_is_served_in_the_same_drain(fake: FakeSys) -> None:
    """A packet that arrives while RX interrupts are masked raises none: the drain
    looks again after re-arming and serves it without another interrupt."""
    fake.attach()
    t = FakeUio(fake).open()
    host = Host(fake)
    try:
        host.send(b"first!!!", 1)
        t.wait_interrupt()
        seen: list[bytes] = []

        def answer(payload: memoryview) -> bytes:
            seen.append(bytes(payload))
            if len(seen) == 1:  # the host queues more while we serve, interrupts masked
                host.send(b"late" + bytes(4), 2, interrupt=False)
            return b"ok"

        assert t.drain(answer) == 2
        assert seen == [b"first!!!", b"late" + bytes(4)]
    finally:
        host.close()
        t.close()


def test_rescind_is_a_transport_error(fake: FakeSys, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.attach()
    t = FakeUio(fake).open()
    try:
        assert fake.host_end is not None
        fake.host_end.send(struct.pack("<I", 1))

        def eio(fd: int, n: int) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr("hvguest.transport.uio.os.read", eio)
        with pytest.raises(TransportError, match="rescinded"):
            t.wait_interrupt()
        monkeypatch.undo()
        fake.host_end.close()
        fake.host_end = None
        with pytest.raises(TransportError, match="write failed"):
            t.drain(lambda payload: 0)  # the re-arm's signal cannot reach the host
    finally:
        t.close()


def test_rx_indices_showing_less_than_a_packet_abandon_the_ring(fake: FakeSys) -> None:
    fake.attach()
    t = FakeUio(fake).open()
    host = Host(fake)
    try:
        host.rx.write_index = 8  # fewer bytes than a packet: the indices are wrong
        with pytest.raises(RingAbandoned, match="less than one packet"):
            t.drain(lambda payload: 0)
    finally:
        host.close()
        t.close()


def test_corrupt_framing_is_dropped_and_serving_goes_on(fake: FakeSys) -> None:
    fake.attach()
    t = FakeUio(fake).open()
    host = Host(fake)
    try:
        host.send(b"12345678", 1, interrupt=False)
        # The descriptor's header length says 0 (must be 16): the framing is unknown.
        host.rx.copy_in(host.rx.read_index + 2, struct.pack("<H", 0))
        with pytest.raises(CorruptPacket):
            t.drain(lambda payload: 0)
        assert t.discard_corrupt() == 32
        assert host.rx.available == 0
        host.send(b"next one", 2, interrupt=False)
        assert t.drain(lambda payload: b"ok") == 1
    finally:
        host.close()
        t.close()


def test_not_open() -> None:
    t = UioTransport(Paths())
    with pytest.raises(TransportError):
        t.fileno()
    with pytest.raises(TransportError):
        t.wait_interrupt()
    with pytest.raises(TransportError):
        t.drain(lambda payload: 0)
    t.close()
