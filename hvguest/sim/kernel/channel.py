"""The in-kernel end of a util (IC) VMBus channel, and the kernel's IC helpers.

The host puts IC payloads (pipe header + icmsg header + body) on the channel; the
service reads them only when its state machine allows, exactly like the drivers'
``onchannelcallback``. Responses go back through ``on_response``.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

ICMSG_HDR = 28
OFF_MSGTYPE = 12
OFF_MSGSIZE = 18
OFF_STATUS = 20
OFF_FLAGS = 25

ICMSGTYPE_NEGOTIATE = 0
ICMSGTYPE_KVPEXCHANGE = 2
ICMSGTYPE_VSS = 5
ICMSGTYPE_FCOPY = 7

IC_FLAGS_RESPONSE = 5  # TRANSACTION | RESPONSE
_MAX_VER_COUNT = 100

HV_S_OK = 0
HV_E_FAIL = 0x80004005
HV_S_CONT = 0x80070103

ResponseSink = Callable[[int, bytes], None]  # (trans_id, payload)


def msgtype(payload: bytes | bytearray) -> int:
    return int(struct.unpack_from("<H", payload, OFF_MSGTYPE)[0])


def set_status(buf: bytearray, status: int) -> None:
    struct.pack_into("<I", buf, OFF_STATUS, status & 0xFFFFFFFF)


def set_response_flags(buf: bytearray) -> None:
    buf[OFF_FLAGS] = IC_FLAGS_RESPONSE


def negotiate_response(buf: bytearray, length: int, fw: list[int], srv: list[int]) -> bool:
    """The kernel's vmbus_prep_negotiate_resp, applied to ``buf`` in place.

    Versions are ``major << 16 | minor`` in preference order. Returns whether both a
    framework and a service version matched.
    """
    if length < ICMSG_HDR + 4:
        return False  # buffer left untouched
    struct.pack_into("<H", buf, OFF_MSGSIZE, 0x10)
    fcount, mcount = struct.unpack_from("<HH", buf, ICMSG_HDR)
    fw_ver = (fcount, 0)
    srv_ver = (mcount, 0)
    found = False
    if fcount <= _MAX_VER_COUNT and mcount <= _MAX_VER_COUNT and (
        ICMSG_HDR + 8 + 4 * (fcount + mcount) <= length
    ):
        offered = [
            struct.unpack_from("<HH", buf, ICMSG_HDR + 8 + 4 * j) for j in range(fcount + mcount)
        ]
        for ver in fw:
            want = (ver >> 16, ver & 0xFFFF)
            if want in offered[:fcount]:
                fw_ver, found = want, True
                break
        if found:
            found = False
            for ver in srv:
                want = (ver >> 16, ver & 0xFFFF)
                if want in offered[fcount:]:
                    srv_ver, found = want, True
                    break
    struct.pack_into("<HH", buf, ICMSG_HDR, 1 if found else 0, 1 if found else 0)
    # The reply versions are written even on failure; the buffer must hold them.
    if len(buf) >= ICMSG_HDR + 16:
        struct.pack_into("<HHHH", buf, ICMSG_HDR + 8, *fw_ver, *srv_ver)
    return found


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
