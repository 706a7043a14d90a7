"""State shared by the three char-device services (hv_kvp, hv_snapshot, hv_fcopy).

Mirrors the drivers' ``hvutil_device_state`` machine: one host transaction at a time,
the channel is not read while a transaction is open, a timer fails the transaction
with HV_E_FAIL. The raw-injection path lets a test put arbitrary daemon-side bytes
on the device as a misbehaving kernel would, through the same state machine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from hvguest.sim.kernel.channel import (
    HostChannel,
    msgtype,
    negotiate_response,
    set_response_flags,
    set_status,
)
from hvguest.sim.kernel.timers import Timer, TimerQueue
from hvguest.sim.kernel.transport import UtilTransport
from hvguest.wire.icmsg import ICMSG_HDR_SIZE, IcMsgType, IcVersion
from hvguest.wire.status import HvStatus

HV_E_FAIL = HvStatus.HV_E_FAIL

HV_UTIL_TIMEOUT = 30.0

RawCallback = Callable[[bytes | None], None]


class State(IntEnum):
    DEVICE_INIT = 0
    READY = 1
    HOSTMSG_RECEIVED = 2
    USERSPACE_REQ = 3
    USERSPACE_RECV = 4
    DEVICE_DYING = 5


@dataclass(frozen=True)
class Driver:
    """What tells one util driver from another: its device, IC message type, receive
    buffer, version tables and the check it makes of a body of its own type (the
    minimum size, and the log line naming a shorter one; 0: no check)."""

    device_name: str
    icmsgtype: int
    recv_size: int
    fw_versions: Sequence[IcVersion]
    srv_versions: Sequence[IcVersion]
    body_min: int = 0
    short_body_log: str = ""


@dataclass
class Txn:
    trans_id: int
    recv_len: int
    raw: RawCallback | None = None  # set for an injected raw message


class UtilService:
    """Base of the KVP, VSS and legacy FCOPY models."""

    driver: Driver
    # String conversion of host UTF-16 (fs/nls utf16s_to_utf8s): True models kernels
    # before the late-2025 NLS fix, which skipped a character that did not fit and went
    # on; False models later kernels, which stop there. Set per instance to pick one.
    nls_skip_oversized = True

    def __init__(self, timers: TimerQueue, channel: HostChannel | None = None) -> None:
        self.timers = timers
        self.channel = channel or HostChannel(self.driver.recv_size)
        self.channel.set_notify(self.on_channel)
        self.transport = UtilTransport(self.driver.device_name, self._on_msg_logged, self.on_reset)
        self.state = State.DEVICE_INIT
        self.recv_buffer = bytearray(self.driver.recv_size)
        self.txn: Txn | None = None
        self._timeout: Timer | None = None
        self._raw: deque[tuple[bytes, RawCallback]] = deque()
        self.log: list[str] = []
        self.negotiated: tuple[int, int] | None = None

    # -- helpers ---------------------------------------------------------------
    def klog(self, text: str) -> None:
        self.log.append(f"{self.driver.device_name}: {text}")

    def arm(self, seconds: float) -> None:
        self._timeout = self.timers.call_later(seconds, self.on_timeout)

    def cancel_timeout(self) -> bool:
        """cancel_delayed_work_sync: True if the timer was still pending."""
        timer, self._timeout = self._timeout, None
        return timer.cancel() if timer is not None else False

    def poll_wrapper(self) -> None:
        """hv_poll_channel(..., *_poll_wrapper): back to READY, re-read the channel."""
        self.state = State.READY
        self.on_channel()

    def inject_raw(self, data: bytes, callback: RawCallback) -> None:
        """Queue ``data`` for the daemon as the next transaction; ``callback`` gets the
        daemon's accepted reply, or None when the kernel failed the transaction."""
        self._raw.append((bytes(data), callback))
        self.on_channel()

    def _on_msg_logged(self, data: bytes) -> int:
        rc = self.on_msg(data)
        if rc < 0:
            self.klog(f"daemon write of {len(data)} bytes rejected ({rc})")
        return rc

    def _take_packet(self) -> tuple[int, int] | None:
        """Read one packet into recv_buffer; returns (trans_id, length)."""
        pkt = self.channel.recv()
        if pkt is None:
            return None
        trans_id, payload = pkt
        self.recv_buffer[: len(payload)] = payload
        return trans_id, len(payload)

    def _answer_negotiate(self, trans_id: int, length: int) -> None:
        chosen = negotiate_response(
            self.recv_buffer, length, self.driver.fw_versions, self.driver.srv_versions
        )
        if chosen is not None:
            self.negotiated = (chosen[0].packed, chosen[1].packed)
        self._send_buffer(trans_id, length)

    def _packet_kind(self, length: int) -> int | None:
        """The message type of the packet in recv_buffer; None (logged) if it is too
        short to have one."""
        if length < ICMSG_HDR_SIZE:
            self.klog(f"packet length too small: {length}")
            return None
        return msgtype(self.recv_buffer)

    def _invalid_kind(self, kind: int) -> None:
        self.klog(f"invalid msg type {kind}; packet dropped")

    def _service_packet(self) -> tuple[int, int] | None:
        """The next host packet of this service's own type, as (trans_id, length) in
        recv_buffer, after answering NEGOTIATEs and dropping (with the driver's log
        line) what the driver drops; None when there is none, or a raw transaction was
        started instead."""
        while (got := self._next_host_packet()) is not None:
            trans_id, length = got
            kind = self._packet_kind(length)
            if kind is None:
                continue
            if kind == IcMsgType.NEGOTIATE:
                self._answer_negotiate(trans_id, length)
                continue
            if kind != self.driver.icmsgtype:
                self._invalid_kind(kind)
                continue
            if length < ICMSG_HDR_SIZE + self.driver.body_min:
                self.klog(f"{self.driver.short_body_log}: {length}")
                continue
            return got
        return None

    def _send_buffer(self, trans_id: int, length: int) -> None:
        set_response_flags(self.recv_buffer)
        self.channel.send(trans_id, bytes(self.recv_buffer[:length]))

    def respond_status(self, error: int) -> None:
        """Answer the open transaction with ``error`` and the request bytes as they are."""
        txn, self.txn = self.txn, None
        if txn is None:
            return
        if txn.raw is not None:
            txn.raw(None)
            return
        set_status(self.recv_buffer, error)
        self._send_buffer(txn.trans_id, txn.recv_len)

    def _start_raw(self) -> bool:
        """Start a queued raw transaction if READY; True if one was started."""
        if not self._raw or self.state != State.READY:
            return False
        data, callback = self._raw.popleft()
        self.txn = Txn(trans_id=-1, recv_len=0, raw=callback)
        self.state = State.HOSTMSG_RECEIVED
        self.arm(self.raw_timeout())
        self.state = State.USERSPACE_REQ
        if self.transport.send(data) != 0 and self.cancel_timeout():
            self.respond_status(HV_E_FAIL)
            self.state = State.READY
        return True

    def raw_timeout(self) -> float:
        return HV_UTIL_TIMEOUT

    def _next_host_packet(self) -> tuple[int, int] | None:
        """The next host packet in recv_buffer as (trans_id, length); None when there is
        none, or when a queued raw transaction was started instead (it goes first)."""
        if self._start_raw():
            return None
        return self._take_packet()

    def _send_to_daemon(self, msg: bytes) -> None:
        """Queue the open transaction's message for the daemon. If that fails, the host
        is answered HV_E_FAIL at once, unless the timeout has already answered it."""
        self.state = State.USERSPACE_REQ
        if self.transport.send(msg) != 0:
            self.klog("failed to communicate to the daemon")
            if self.cancel_timeout():
                self.respond_status(HV_E_FAIL)
                self.state = State.READY

    def _register_done(self) -> None:
        """The daemon read the registration echo: the channel is served from now on."""
        self.klog("userspace daemon registered")
        self.poll_wrapper()

    def _finish_raw(self, reply: bytes) -> bool:
        """Deliver an accepted daemon reply to a raw transaction."""
        txn = self.txn
        if txn is None or txn.raw is None:
            return False
        self.txn = None
        txn.raw(reply)
        return True

    def on_channel(self) -> None:
        """The driver's onchannelcallback: take the host's packets while no transaction
        is with the daemon; each one opens a transaction that ``take_request`` handles."""
        while self.state <= State.READY:
            got = self._service_packet()
            if got is None:
                return
            self.txn = Txn(*got)
            if self.take_request(*got):
                return

    # -- per service -------------------------------------------------------------
    def take_request(self, trans_id: int, length: int) -> bool:
        """Handle the host request in recv_buffer (the open transaction): answer it, or
        pass it to the daemon and return True (the channel is not read meanwhile)."""
        raise NotImplementedError

    def on_msg(self, data: bytes) -> int:
        raise NotImplementedError

    def on_reset(self) -> None:
        if self.cancel_timeout():
            self.respond_status(HV_E_FAIL)
        self.state = State.DEVICE_INIT

    # The message a driver fakes for the daemon on suspend (None: nothing).
    suspend_message: bytes | None = None

    def suspend(self) -> None:
        """Guest hibernation (the *_pre_suspend hooks): pending work is cancelled without
        answering the host (closing the channel implies failure), a fake message may be
        queued for the daemon, and the state is forced to READY, so the daemon's next
        reply fails with EINVAL and it re-opens the device."""
        self.cancel_timeout()
        txn, self.txn = self.txn, None
        if txn is not None and txn.raw is not None:
            txn.raw(None)
        if self.suspend_message is not None:
            self.transport.send(self.suspend_message)
        self.state = State.READY
        self.klog("suspended")

    def on_timeout(self) -> None:
        self._timeout = None
        self.klog("timeout: host request failed with HV_E_FAIL")
        self.respond_status(HV_E_FAIL)
        self.poll_wrapper()
