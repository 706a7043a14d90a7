"""The daemon's UIO handler on rings in memory: draining, framing, bad packets, and a
failing ring handed to the channel (closed, re-opened after the back-off)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from hvguest.config import load_config_text
from hvguest.daemon import Runtime
from hvguest.daemons.fcopyd import FcopyDaemon
from hvguest.errors import TransportError
from hvguest.paths import Paths
from hvguest.state import read_state
from hvguest.transport.uio import UioTransport
from hvguest.wire.fcopy import FcopyComplete, FcopyStart, FcopyWrite
from hvguest.wire.icmsg import (
    ICMSG_REQUEST_FLAGS,
    IcHeader,
    IcMsgType,
    IcVersion,
    build_negotiate_request,
    parse_negotiate_response,
)
from hvguest.wire.status import HvStatus
from hvguest.wire.vmbus import RING_HEADER_SIZE, build_inband_packet, packet_trailer

RING = 0x5000


class MemoryUio(UioTransport):
    """The real UioTransport serving rings in a bytearray; the interrupt control
    (unmask + signal) is counted instead of written to /dev/uioN."""

    def __init__(self) -> None:
        super().__init__(Paths())
        self.mem = bytearray(2 * RING)
        self.attach(self.mem, RING, "uio0")
        assert self.tx is not None and self.rx is not None
        self.host_tx, self.host_rx = self.tx, self.rx
        self.rearms = 0
        self.on_unmask: Callable[[], None] = lambda: None
        self.closed = False

    # host side
    def host_send(self, payload: bytes, trans_id: int) -> None:
        self.host_rx.write_packet(payload, trans_id)

    def host_send_raw(self, packet: bytes) -> None:
        w = self.host_rx.write_index
        start = RING + RING_HEADER_SIZE + w  # RX data area in the shared buffer; no wrap here
        self.mem[start : start + len(packet)] = packet
        self.mem[start + len(packet) : start + len(packet) + 8] = packet_trailer(w)
        self.host_rx.write_index = w + len(packet) + 8

    def host_replies(self) -> list[tuple[int, bytes]]:
        out = []
        while (got := self.host_tx.read_packet()) is not None:
            out.append((got[0].trans_id, got[1]))
        return out

    # daemon side
    def fileno(self) -> int:
        return 0

    def _unmask(self) -> None:
        self.rearms += 1
        self.on_unmask()

    @property
    def is_open(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True


def ic(body: bytes, msgtype: int = IcMsgType.FCOPY, tid: int = 1) -> bytes:
    header = IcHeader(
        0,
        20 + len(body),
        IcVersion(3, 0),
        msgtype,
        IcVersion(1, 1),
        len(body),
        0,
        tid,
        ICMSG_REQUEST_FLAGS,
    )
    return header.encode() + body


@pytest.fixture
def daemon(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    config = load_config_text(f"fcopy:\n  allowed_roots: ['{root}']\n")
    runtime = Runtime("t")
    d = FcopyDaemon(Paths(run=str(tmp_path / "run")), config, runtime, "uio",
                    device=MemoryUio())
    d.transport = d.device
    d.root = root
    yield d
    runtime.close()


def status_of(payload: bytes) -> int:
    return IcHeader.decode(payload).status


def serve(daemon) -> None:
    """What the ring's worker does after an open: drain what is queued (a fresh
    worker does not wait for an interrupt first)."""
    daemon.worker().serve_one()


def run_until(runtime: Runtime, done: Callable[[], bool]) -> None:
    for _ in range(50):
        if done():
            return
        runtime.run_once(0.1)
    raise AssertionError("timed out")


def test_drains_every_queued_packet_and_echoes_trans_id(daemon):
    t = daemon.transport
    t.host_send(build_negotiate_request([IcVersion(3, 0)], [IcVersion(1, 1)]), 10)
    t.host_send(ic(FcopyStart("ü 🎉", str(daemon.root), 0, 3).encode(utf16=True)), 11)
    t.host_send(ic(FcopyWrite(0, b"abc").encode()), 12)
    t.host_send(ic(FcopyComplete().encode()), 13)
    serve(daemon)
    replies = t.host_replies()
    assert [tid for tid, _ in replies] == [10, 11, 12, 13]
    assert parse_negotiate_response(replies[0][1])[1:] == (IcVersion(3, 0), IcVersion(1, 1))
    assert [status_of(p) for _, p in replies[1:]] == [0, 0, 0]
    assert all(p[25] == 5 for _, p in replies)
    assert (daemon.root / "ü 🎉").read_bytes() == b"abc"


def test_bad_descriptor_is_skipped_and_serving_continues(daemon):
    t = daemon.transport
    bad = bytearray(build_inband_packet(ic(FcopyComplete().encode()), 5))
    struct.pack_into("<H", bad, 2, 1)  # offset8 below the descriptor
    t.host_send_raw(bytes(bad))
    serve(daemon)
    assert t.host_replies() == []
    assert t.host_rx.available == 0 and not t.closed
    t.host_send(ic(FcopyComplete().encode()), 6)
    serve(daemon)
    [(tid, payload)] = t.host_replies()
    assert tid == 6 and status_of(payload) == HvStatus.HV_E_FAIL  # COMPLETE before START


def test_other_message_types_answered_e_fail(daemon):
    t = daemon.transport
    t.host_send(ic(bytes(8), msgtype=IcMsgType.HEARTBEAT), 3)
    serve(daemon)
    [(tid, payload)] = t.host_replies()
    assert tid == 3 and status_of(payload) == HvStatus.HV_E_FAIL


def test_corrupt_ring_index_reopens(daemon, monkeypatch):
    t = daemon.transport
    t.host_rx.read_index = RING  # beyond the data area
    reopened = []

    def reopen() -> None:
        reopened.append(True)
        raise TransportError("still gone")

    monkeypatch.setattr(t, "open", reopen)
    monkeypatch.setattr(daemon.channel, "gone", lambda: False)
    daemon.channel.start(daemon)  # the worker finds the corrupt ring at once
    run_until(daemon.runtime, lambda: t.closed)
    # Closed at once; re-opened after the first back-off step, not in the same call.
    assert reopened == []
    assert daemon.channel.backoff.failures == 1
    assert read_state(daemon.paths, "fcopy")["state"] == "waiting for device"
    run_until(daemon.runtime, lambda: bool(reopened))
    assert reopened == [True]


def test_packet_arriving_before_rearm_is_served(daemon):
    t = daemon.transport
    sent = []

    def unmask() -> None:
        if not sent:  # the host queues a packet while interrupts were masked
            sent.append(True)
            t.host_send(ic(FcopyComplete().encode()), 9)

    t.on_unmask = unmask
    t.host_send(ic(FcopyComplete().encode()), 8)
    serve(daemon)
    assert [tid for tid, _ in t.host_replies()] == [8, 9]


def test_transport_error_is_not_fatal(daemon, monkeypatch):
    t = daemon.transport

    def boom() -> None:
        raise TransportError("/dev/uio0: device rescinded by the host")

    t.on_unmask = boom
    t.host_send(ic(FcopyComplete().encode()), 8)  # answering it re-arms: boom
    monkeypatch.setattr(t, "open", lambda: (_ for _ in ()).throw(TransportError("x")))
    monkeypatch.setattr(daemon.channel, "gone", lambda: False)
    daemon.channel.start(daemon)
    run_until(daemon.runtime, lambda: t.closed)  # logged; does not raise
    assert daemon.channel._reopen_timer is not None  # a retry is scheduled


def test_non_inband_packet_ignored(daemon):
    t = daemon.transport
    packet = bytearray(build_inband_packet(ic(FcopyComplete().encode()), 4))
    struct.pack_into("<H", packet, 0, 11)  # VM_PKT_COMP
    t.host_send_raw(bytes(packet))
    t.host_send(ic(FcopyComplete().encode()), 5)
    serve(daemon)
    assert [tid for tid, _ in t.host_replies()] == [5]


def test_status_line_carries_counts_never_a_host_supplied_name(daemon):
    """sd_notify STATUS= is a newline-separated assignment list: nothing the host
    names may reach it."""
    t = daemon.transport
    t.host_send(ic(FcopyStart("READY=1 name", str(daemon.root), 0, 3).encode(utf16=True)), 1)
    serve(daemon)
    assert daemon.status_text() == "receiving 0 of 3 bytes; 0 file(s) received, 0 failed"
    t.host_send(ic(FcopyWrite(0, b"abc").encode()), 2)
    t.host_send(ic(FcopyComplete().encode()), 3)
    serve(daemon)
    assert daemon.status_text() == "1 file(s) received, 0 failed"
