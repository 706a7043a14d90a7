"""Serving the two rings of a UIO channel: drain RX, answer on TX, re-arm, and
decide what a malformed ring costs (kernels >= 6.10, protocol.md §5).

``RingChannel.drain(handler)`` answers every queued packet straight from the shared
RX ring: the handler gets a view of the payload in the ring (no copy), and a reply
that echoes the request as an IC response is copied once, ring to ring. The read
index moves only after the reply is in TX, so the host cannot reuse the bytes the
handler and the reply read. No signal goes out per reply: re-arming RX interrupts
at the end of the drain signals the host (uio_hv_generic), once for the batch.

What a bad ring costs:

* a packet whose framing cannot be trusted (offsets, lengths) hides where the next
  one starts: ``drain`` raises ``CorruptPacket``; ``discard_corrupt()`` drops what
  the host queued (it times the request out and retries) and serving goes on;
* an index outside the data area, or a TX ring the host left full, means the
  channel state is unknown: ``RingAbandoned`` closes the channel, and opening it
  again gives fresh rings (uio_hv_generic connects on the first open and
  disconnects on the last close), so the host negotiates anew.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from hvguest.errors import TransportError
from hvguest.transport.ring import RingBuffer, RingError
from hvguest.wire.icmsg import ICMSG_HDR_SIZE
from hvguest.wire.status import HvStatus
from hvguest.wire.vmbus import VM_PKT_DATA_INBAND

log = logging.getLogger(__name__)

_INDICES = ("read_index", "write_index")

# What a handler answers for one payload: None (no reply), an int (the IC status of
# the response that echoes the request, the common case) or the reply payload.
Reply = bytes | int | None
PacketHandler = Callable[[memoryview], Reply]


class RingAbandoned(RingError):
    """A ring whose indices cannot be trusted: close the channel and open it again."""


class CorruptPacket(RingError):
    """A packet's framing cannot be trusted: ``discard_corrupt()`` and serve on."""


class RingChannel:
    """TX (guest -> host) and RX (host -> guest) of one channel; ``signal`` unmasks
    RX interrupts and signals the host."""

    def __init__(self, tx: RingBuffer, rx: RingBuffer, signal: Callable[[], None]) -> None:
        self.tx = tx
        self.rx = rx
        self._signal = signal

    def drain(self, handler: PacketHandler, after_reply: Callable[[], None] | None = None) -> int:
        """Answer every packet in RX, re-enable interrupts, and go again if packets
        arrived while they were masked (those raised no interrupt). Returns the
        number of replies sent. Raises CorruptPacket (framing), RingAbandoned (an
        index out of range, TX full) or TransportError (the device).

        With ``after_reply``, the host is signalled after each reply (once its
        packet is consumed) and ``after_reply()`` runs then: work the reply does
        not depend on overlaps with the host's next request."""
        error: TransportError
        try:
            return self._drain(handler, after_reply)
        except RingError as exc:
            error = self._judge(exc)
        except TransportError as exc:
            error = TransportError(str(exc))
        # Raised out here, without the original's traceback: its frames hold views
        # of the ring, and while any is alive the mapping cannot be closed (and a
        # channel that is not closed is not given fresh rings).
        raise error

    def _judge(self, exc: RingError) -> RingError:
        if isinstance(exc, RingAbandoned):
            return RingAbandoned(str(exc), field=exc.field)
        if exc.field in _INDICES:
            return abandon(self.rx if str(exc).startswith(self.rx.name) else self.tx, exc)
        return CorruptPacket(str(exc), field=exc.field)

    def _drain(self, handler: PacketHandler, after_reply: Callable[[], None] | None) -> int:
        rx, tx = self.rx, self.tx
        answered = 0
        rearmed = False  # interrupts unmasked (and the host signalled) since the last reply
        while True:
            w, r = rx._indices()
            if w == r:
                if rearmed:
                    return answered
                self._signal()
                rearmed = True
                continue  # packets that arrived while masked raised no interrupt
            ptype, trans_id, payload, after = rx.peek_packet(w, r)
            if ptype != VM_PKT_DATA_INBAND:
                # IC traffic is in-band data only; a completion or other type
                # asks for no answer.
                log.warning("%s: VMBus packet type %d ignored", rx.name, ptype)
                rx.read_to(after)
                continue
            try:
                reply = handler(payload)
            except TransportError:  # RingError included: the drain decides below
                raise
            except Exception:
                reply = self._handler_failed(payload)
            if reply is not None:
                if isinstance(reply, int):
                    tx.write_response(payload, trans_id, reply)
                else:
                    tx.write_packet(reply, trans_id)
                answered += 1
                rearmed = False
            rx.read_to(after)  # only now may the host reuse those bytes
            if after_reply is not None and not rearmed:
                self._signal()
                rearmed = True
                after_reply()

    @staticmethod
    def _handler_failed(payload: memoryview) -> Reply:
        """A bug while serving one packet: answer it HV_E_FAIL (when it is long
        enough to echo as an IC response) so that it is consumed and the next one is
        served; left at the head of RX, every later interrupt would serve it again.
        The traceback is logged as text: a log record holding it would hold views of
        the ring, and a mapping with live views cannot be closed."""
        log.error("unexpected failure serving a packet of %d bytes; answered HV_E_FAIL:\n%s",
                  len(payload), traceback.format_exc())
        return int(HvStatus.HV_E_FAIL) if len(payload) >= ICMSG_HDR_SIZE else None

    def discard_corrupt(self) -> int:
        """Drop what the host queued on RX after a ``CorruptPacket``: the bytes
        dropped. RingAbandoned when the indices themselves are out of range."""
        rx = self.rx
        try:
            w = rx.write_index
            if w >= rx.dsize or rx.read_index >= rx.dsize:
                raise abandon(rx, RingError("index beyond the data area", field="write_index"))
            dropped: int = rx.available
            rx.read_index = w
        except RingAbandoned:
            raise
        except TransportError as exc:
            raise abandon(rx, RingError(str(exc), field="read_index")) from exc
        return dropped


def abandon(ring: RingBuffer, exc: RingError) -> RingAbandoned:
    """The error that closes the channel, with the values seen (read once more)."""
    try:
        values = f"read_index {ring.read_index}, write_index {ring.write_index}"
    except (TransportError, ValueError):
        values = "indices unreadable"
    return RingAbandoned(
        f"abandoning the ring: {ring.name} {values}, data area {ring.dsize} bytes ({exc})",
        field=exc.field,
    )
