"""CharDevTransport against a SOCK_SEQPACKET listener and a faked device node."""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from hvguest.errors import TransportError
from hvguest.paths import Paths
from hvguest.transport import chardev
from hvguest.transport.base import Transport
from hvguest.transport.chardev import (
    CharDevTransport,
    open_fcopy,
    open_kvp,
    open_vss,
)
from hvguest.wire.kvp import KVP_MSG_SIZE


def kvp_echo(version: bytes = b"3.1") -> bytes:
    msg = bytearray(KVP_MSG_SIZE)
    msg[0] = 100
    msg[4 : 4 + len(version)] = version
    return bytes(msg)


def handshake_reply(register: bytes) -> bytes | None:
    """What the kernel queues after a registration write (protocol §2.1/§3.1/§4.2)."""
    if len(register) == KVP_MSG_SIZE and register[0] == 100:
        return kvp_echo()
    if len(register) == 12 and register[0] == 129:
        return struct.pack("<I", 129)
    if register == struct.pack("<i", 1):
        return struct.pack("<I", 1)
    return None


class FakeKernel:
    """Serves one connected SEQPACKET end like hv_utils_transport: answers the
    registration, then replies to each message with ``handler(msg)``."""

    def __init__(
        self,
        sock: socket.socket,
        handler: Callable[[bytes], bytes | None] = lambda m: None,
        echo: Callable[[bytes], bytes | None] = handshake_reply,
        registry: list[FakeKernel] | None = None,
    ) -> None:
        if registry is not None:
            registry.append(self)  # before serving: tests look it up after the handshake
        self.sock = sock
        self.handler = handler
        self.echo = echo
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        first = True
        while True:
            try:
                msg = self.sock.recv(65536)
            except OSError:
                return
            if not msg:
                return
            self.received.append(msg)
            reply = self.echo(msg) if first else self.handler(msg)
            first = False
            if reply is not None:
                try:
                    self.sock.send(reply)
                except OSError:
                    return

    def push(self, data: bytes) -> None:
        self.sock.send(data)


@pytest.fixture
def listener(tmp_path: os.PathLike[str]) -> Iterator[tuple[str, list[FakeKernel]]]:
    """A simulator-style socket at <dev>/vmbus/hv_kvp; every connection is served."""
    dev = os.path.join(str(tmp_path), "dev", "vmbus")
    os.makedirs(dev)
    kernels: list[FakeKernel] = []
    socks: list[socket.socket] = []
    for name in ("hv_kvp", "hv_vss", "hv_fcopy"):
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        srv.bind(os.path.join(dev, name))
        srv.listen(4)
        socks.append(srv)

        def accept(srv: socket.socket = srv) -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                FakeKernel(conn, handler=lambda m: m[:1] + b"reply", registry=kernels)

        threading.Thread(target=accept, daemon=True).start()
    yield os.path.join(str(tmp_path), "dev"), kernels
    for s in socks:
        s.shutdown(socket.SHUT_RDWR)
        s.close()
    for k in kernels:
        k.sock.close()


def test_kvp_handshake_over_socket(listener: tuple[str, list[FakeKernel]]) -> None:
    dev, kernels = listener
    t = open_kvp(Paths(dev=dev))
    try:
        assert isinstance(t, Transport)
        assert t.is_socket
        assert t.version == "3.1"
        assert len(kernels[0].received[0]) == KVP_MSG_SIZE
        assert kernels[0].received[0][0] == 100
        t.write_packet(b"\x01request")
        assert t.read_packet(timeout=5) == b"\x01reply"
        assert t.read_packet() == b""  # nothing queued: no blocking
    finally:
        t.close()


def test_vss_and_fcopy_handshakes_over_socket(listener: tuple[str, list[FakeKernel]]) -> None:
    dev, kernels = listener
    vss = open_vss(Paths(dev=dev))
    fcopy = open_fcopy(Paths(dev=dev))
    try:
        assert vss.version == "129"
        assert fcopy.version == "1"
        regs = sorted(k.received[0] for k in kernels)
        assert struct.pack("<i", 1) in regs
        assert bytes([129]) + bytes(11) in regs
    finally:
        vss.close()
        fcopy.close()


def test_peer_close_raises_then_reopen_registers_again(
    listener: tuple[str, list[FakeKernel]],
) -> None:
    dev, kernels = listener
    t = open_kvp(Paths(dev=dev))
    try:
        kernels[0].sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(TransportError):
            t.read_packet(timeout=5)
        t.reopen()
        assert t.version == "3.1"
        assert len(kernels) == 2
        assert kernels[1].received[0][0] == 100
    finally:
        t.close()


def test_absent_device_message(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(TransportError, match="device absent: the host does not offer"):
        open_kvp(Paths(dev=str(tmp_path)))


# -- device mode: a regular file whose open() is redirected to a socketpair --


class FakeDevice:
    """Makes ``os.open(path)`` in chardev return one end of a socketpair whose
    other end is served by a FakeKernel, as a FUSE-served node (S_IFREG) would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
        self.path = path
        self.open_error: int | None = None
        self.kernels: list[FakeKernel] = []
        self.handler: Callable[[bytes], bytes | None] = lambda m: None
        self.echo: Callable[[bytes], bytes | None] = handshake_reply
        self.flags: list[int] = []
        with open(path, "wb"):
            pass
        real_open = os.open

        def fake_open(p: str, flags: int, *args: int) -> int:
            if p != self.path:
                return real_open(p, flags, *args)
            self.flags.append(flags)
            if self.open_error is not None:
                raise OSError(self.open_error, os.strerror(self.open_error), p)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            FakeKernel(theirs, self.handler, self.echo, registry=self.kernels)
            return ours.detach()

        monkeypatch.setattr("hvguest.transport.chardev.os.open", fake_open)

    @property
    def kernel(self) -> FakeKernel:
        return self.kernels[-1]

    def close(self) -> None:
        for k in self.kernels:
            k.sock.close()


@pytest.fixture
def kvp_device(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDevice]:
    vmbus = os.path.join(str(tmp_path), "vmbus")
    os.makedirs(vmbus)
    dev = FakeDevice(monkeypatch, os.path.join(vmbus, "hv_kvp"))
    yield dev
    dev.close()


def test_device_handshake_opens_read_write_cloexec(
    kvp_device: FakeDevice, tmp_path: os.PathLike[str]
) -> None:
    t = open_kvp(Paths(dev=str(tmp_path)))
    try:
        assert not t.is_socket
        assert t.version == "3.1"
        assert kvp_device.flags == [os.O_RDWR | os.O_CLOEXEC]
        kvp_device.kernel.push(b"\x03" + bytes(KVP_MSG_SIZE - 1))
        msg = t.read_packet(timeout=5)
        assert len(msg) == KVP_MSG_SIZE and msg[0] == 3
    finally:
        t.close()


def test_busy_device_names_the_likely_holder(
    kvp_device: FakeDevice, tmp_path: os.PathLike[str]
) -> None:
    kvp_device.open_error = errno.EBUSY
    with pytest.raises(TransportError) as exc:
        open_kvp(Paths(dev=str(tmp_path)))
    text = str(exc.value)
    assert kvp_device.path in text
    assert "held by another process, e.g. the distribution's hv_kvp_daemon" in text


def test_bad_echo_is_rejected_and_closed(
    kvp_device: FakeDevice, tmp_path: os.PathLike[str]
) -> None:
    kvp_device.echo = lambda m: b"\x04" + bytes(KVP_MSG_SIZE - 1)
    t = chardev.kvp_transport(Paths(dev=str(tmp_path)))
    with pytest.raises(TransportError, match="operation 4, expected 100"):
        t.open()
    assert not t.is_open


def test_short_echo_is_rejected(kvp_device: FakeDevice, tmp_path: os.PathLike[str]) -> None:
    kvp_device.echo = lambda m: b"\x64\0\0\0"
    with pytest.raises(TransportError, match="4 bytes, expected 7432"):
        open_kvp(Paths(dev=str(tmp_path)))


def test_registration_timeout(kvp_device: FakeDevice, tmp_path: os.PathLike[str]) -> None:
    kvp_device.echo = lambda m: None
    t = chardev.kvp_transport(Paths(dev=str(tmp_path)))
    t.register_timeout = 0.2
    with pytest.raises(TransportError, match="no registration reply within 0.2 s"):
        t.open()
    assert not t.is_open


def test_reopen_reregisters_on_a_fresh_open(
    kvp_device: FakeDevice, tmp_path: os.PathLike[str]
) -> None:
    t = open_kvp(Paths(dev=str(tmp_path)))
    try:
        first = t.fileno()
        t.reopen()
        assert len(kvp_device.kernels) == 2
        assert kvp_device.kernels[1].received[0][0] == 100
        assert t.version == "3.1"
        assert t.fileno() >= 0
        # The first connection was closed: its kernel sees EOF.
        kvp_device.kernels[0].thread.join(timeout=5)
        assert not kvp_device.kernels[0].thread.is_alive()
        del first
    finally:
        t.close()


def test_write_errors_become_transport_errors(
    kvp_device: FakeDevice, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    t = open_kvp(Paths(dev=str(tmp_path)))
    try:
        monkeypatch.setattr("hvguest.transport.chardev.os.write", lambda fd, data: len(data) - 1)
        with pytest.raises(TransportError, match="short write, 7431 of 7432"):
            t.write_packet(bytes(KVP_MSG_SIZE))

        def fail(fd: int, data: bytes) -> int:
            raise OSError(errno.EINVAL, "Invalid argument")

        monkeypatch.setattr("hvguest.transport.chardev.os.write", fail)
        with pytest.raises(TransportError, match="Invalid argument"):
            t.write_packet(bytes(KVP_MSG_SIZE))
    finally:
        t.close()


def test_read_errors(
    kvp_device: FakeDevice, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    t = open_kvp(Paths(dev=str(tmp_path)))
    try:
        kvp_device.kernel.push(b"x")
        outcomes: list[BaseException | bytes] = []

        def read_with(err: int) -> None:
            def fail(fd: int, n: int) -> bytes:
                raise OSError(err, os.strerror(err))

            monkeypatch.setattr("hvguest.transport.chardev.os.read", fail)
            try:
                outcomes.append(t.read_packet(timeout=5))
            except TransportError as exc:
                outcomes.append(exc)

        read_with(errno.EAGAIN)
        read_with(errno.EINTR)
        read_with(errno.EINVAL)
        read_with(errno.EBADF)
        read_with(errno.EIO)
        assert outcomes[0] == b"" and outcomes[1] == b""
        assert "larger than the 7432-byte read buffer" in str(outcomes[2])
        assert all(isinstance(o, TransportError) for o in outcomes[3:])
    finally:
        t.close()


def test_hangup_without_data_raises(
    kvp_device: FakeDevice, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    t = open_kvp(Paths(dev=str(tmp_path)))
    try:
        monkeypatch.setattr(t, "_poll", lambda fd, timeout: 0x010 | 0x008)
        with pytest.raises(TransportError, match="going away"):
            t.read_packet()
    finally:
        t.close()


def test_custom_transport_socket_busy(tmp_path: os.PathLike[str]) -> None:
    """A socket whose server refuses (closes at once) fails registration cleanly."""
    path = os.path.join(str(tmp_path), "dev")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(path)
    srv.listen(1)

    def refuse() -> None:
        conn, _ = srv.accept()
        conn.close()

    th = threading.Thread(target=refuse, daemon=True)
    th.start()
    t = CharDevTransport(
        path, register=b"\x01", read_size=16, check_echo=lambda e: "x", name="test"
    )
    try:
        with pytest.raises(TransportError, match="ends the connection when the device is busy"):
            t.open()
        assert not t.is_open
    finally:
        th.join(timeout=5)
        srv.close()


def test_read_into_fills_the_callers_buffer(listener: tuple[str, list[FakeKernel]]) -> None:
    dev, kernels = listener
    t = open_fcopy(Paths(dev=dev))
    try:
        buffer = bytearray(64)
        kernels[0].push(b"first message")
        assert t.read_into(buffer) == 13  # blocks until the message is queued
        assert bytes(buffer[:13]) == b"first message"
        kernels[0].push(b"2nd")
        assert t.read_into(buffer) == 3 and bytes(buffer[:3]) == b"2nd"
        kernels[0].sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(TransportError, match="peer closed"):
            t.read_into(buffer)
    finally:
        t.close()


def test_read_into_errors(
    kvp_device: FakeDevice, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    t = open_kvp(Paths(dev=str(tmp_path)))
    try:
        outcomes: list[BaseException | int] = []
        for err in (errno.EAGAIN, errno.EINTR, errno.EINVAL, errno.EIO):

            def fail(fd: int, buffers: object, err: int = err) -> int:
                raise OSError(err, os.strerror(err))

            monkeypatch.setattr("hvguest.transport.chardev.os.readv", fail)
            try:
                outcomes.append(t.read_into(bytearray(100)))
            except TransportError as exc:
                outcomes.append(exc)
        assert outcomes[:2] == [0, 0]  # woken with nothing queued
        assert "larger than the 100-byte read buffer" in str(outcomes[2])
        assert "read failed: Input/output error" in str(outcomes[3])
    finally:
        t.close()


@pytest.mark.parametrize(("service", "absent"), [
    ("kvp", ["hvguest.wire.fcopy", "hvguest.wire.vss"]),
    ("vss", ["hvguest.wire.fcopy", "hvguest.wire.kvp"]),
    ("fcopy", ["hvguest.wire.kvp", "hvguest.wire.vss"]),
])
def test_a_device_loads_only_its_own_codec(service: str, absent: list[str]) -> None:
    """Each daemon serves one device: the others' wire modules stay out of its memory."""
    import subprocess
    import sys

    code = ("import sys\nfrom hvguest.paths import Paths\n"
            "from hvguest.transport.chardev import device_transport\n"
            f"t = device_transport(Paths(), {service!r})\n"
            "print(t.path, *sorted(m for m in sys.modules if m.startswith('hvguest.wire.')"
            " and m.split('.')[2] in ('kvp', 'vss', 'fcopy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    path, *loaded = out.stdout.split()
    assert path == f"/dev/vmbus/hv_{service}"
    assert loaded == [f"hvguest.wire.{service}"] and not set(absent) & set(loaded)
