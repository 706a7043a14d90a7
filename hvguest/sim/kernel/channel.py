"""The in-kernel end of a util (IC) VMBus channel, and the kernel's IC helpers.

The host puts IC payloads (pipe header + icmsg header + body) on the channel; the
service reads them only when its state machine allows, exactly like the drivers'
``onchannelcallback``. Responses go back through ``on_response``.

Offsets, message types, statuses and the negotiation rules are the wire's
(``hvguest.wire.icmsg``, ``hvguest.wire.status``): the same facts, one copy. What is
deliberately the kernel's own, and differs from ``icmsg.negotiate_response`` (which
answers as the UIO daemon does), is where the answer is written: in place in the
driver's receive buffer, which is larger than the packet. So a driver

* leaves the host's status in a NEGOTIATE response (the UIO daemon writes HV_S_OK or
  HV_E_FAIL), and
* writes both version slots even past the end of a short packet: they are never sent,
  but stay in the receive buffer, where a later shorter packet's tail reads them.

``tests/unit/wire/test_icmsg_golden.py`` pins both with the same byte vectors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from hvguest.wire._codec import get_uint
from hvguest.wire.icmsg import (
    ICMSG_FLAGS_OFFSET,
    ICMSG_HDR_SIZE,
    ICMSG_RESPONSE_FLAGS,
    ICMSG_STATUS_OFFSET,
    NEGOTIATE_FIXED_SIZE,
    IcHeader,
    IcVersion,
)
from hvguest.wire.icmsg import negotiate_response as wire_negotiate_response

ResponseSink = Callable[[int, bytes], None]  # (trans_id, payload)

# The two version slots of a NEGOTIATE answer, after the fixed part of the body.
_SLOTS_START = ICMSG_HDR_SIZE + NEGOTIATE_FIXED_SIZE
_SLOTS_END = _SLOTS_START + 8


def msgtype(payload: bytes | bytearray) -> int:
    """The IC message type of a packet (at least an IC header long)."""
    return IcHeader.decode(bytes(payload[:ICMSG_HDR_SIZE])).msgtype


def set_status(buf: bytearray, status: int) -> None:
    buf[ICMSG_STATUS_OFFSET : ICMSG_STATUS_OFFSET + 4] = (status & 0xFFFFFFFF).to_bytes(4, "little")


def set_response_flags(buf: bytearray) -> None:
    buf[ICMSG_FLAGS_OFFSET] = ICMSG_RESPONSE_FLAGS


def negotiate_response(
    buf: bytearray, length: int, fw: Sequence[IcVersion], srv: Sequence[IcVersion]
) -> tuple[IcVersion, IcVersion] | None:
    """The kernel's vmbus_prep_negotiate_resp, applied to the first ``length`` bytes of
    the receive buffer ``buf`` in place; the chosen (framework, service) versions, or
    None when the host offered none of ours (or the packet is malformed)."""
    if length < ICMSG_HDR_SIZE + 4:
        return None  # buffer left untouched
    request = bytes(buf[:length])
    counts = (get_uint(request, ICMSG_HDR_SIZE, 2), get_uint(request, ICMSG_HDR_SIZE + 2, 2))
    host_status = request[ICMSG_STATUS_OFFSET : ICMSG_STATUS_OFFSET + 4]
    answer, fw_pick, srv_pick = wire_negotiate_response(request, fw, srv)
    buf[:length] = answer
    buf[ICMSG_STATUS_OFFSET : ICMSG_STATUS_OFFSET + 4] = host_status
    if fw_pick is None or srv_pick is None:
        # Failed: the slots hold the raw counts as "major"; the part past the packet
        # goes into the rest of the receive buffer.
        slots = IcVersion(counts[0], 0).encode() + IcVersion(counts[1], 0).encode()
        start = max(length, _SLOTS_START)
        if start < _SLOTS_END <= len(buf):
            buf[start:_SLOTS_END] = slots[start - _SLOTS_START :]
        return None
    return fw_pick, srv_pick


class HostChannel:
    """Host -> guest packet queue of one IC channel plus the guest -> host sink.

    ``max_packet`` is the driver's receive buffer: a larger packet cannot be read
    (vmbus_recvpacket fails) and is dropped, which the model records in ``dropped``.
    """

    def __init__(self, max_packet: int) -> None:
        self.max_packet = max_packet
        self._inbound: deque[tuple[int, bytes]] = deque()
        self.on_response: ResponseSink = lambda _tid, _payload: None
        self._notify: Callable[[], None] = lambda: None
        self.dropped: list[tuple[int, bytes]] = []
        self.connected = True

    def set_notify(self, callback: Callable[[], None]) -> None:
        """The service's onchannelcallback: run whenever the host signals."""
        self._notify = callback

    # host side
    def host_send(self, trans_id: int, payload: bytes) -> None:
        self._inbound.append((trans_id, bytes(payload)))
        self._notify()

    def pending(self) -> int:
        return len(self._inbound)

    # guest (kernel) side
    def recv(self) -> tuple[int, bytes] | None:
        while self._inbound:
            trans_id, payload = self._inbound.popleft()
            if len(payload) > self.max_packet:
                self.dropped.append((trans_id, payload))
                continue
            return trans_id, payload
        return None

    def send(self, trans_id: int, payload: bytes) -> None:
        self.on_response(trans_id, bytes(payload))

    def poll(self) -> None:
        """hv_poll_channel: re-run the channel callback (pending packets)."""
        self._notify()
