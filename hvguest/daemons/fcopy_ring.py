"""hvguest-fcopyd's side of the UIO ring (kernels >= 6.10): drain RX, answer on TX,
re-arm, and decide what a malformed ring costs.

One thread blocks in read(4) on /dev/uioN until the host interrupts
(``wait_interrupt``), then ``drain`` answers every queued packet straight from the
shared RX ring, writes the responses to TX and re-enables interrupts, which also
signals the host. Polling first, or signalling once per response, would each add a
round trip per packet on a FUSE-served device.

What a bad ring costs:

* a packet whose framing cannot be trusted (offsets, lengths) hides where the next
  one starts: what the host queued is dropped (it times the request out and
  retries) and serving goes on;
* an index outside the data area, or a TX ring the host left full, means the
  channel state is unknown: ``RingAbandoned`` closes the channel, and opening it
  again gives fresh rings (uio_hv_generic connects on the first open and
  disconnects on the last close), so the host negotiates anew.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from typing import Any

from hvguest.errors import TransportError
from hvguest.transport.ring import RingError
from hvguest.wire.vmbus import VM_PKT_DATA_INBAND

log = logging.getLogger(__name__)

_INDICES = ("read_index", "write_index")


class RingAbandoned(RingError):
    """A ring whose indices cannot be trusted: close the channel and open it again."""


def abandon(ring: Any, exc: RingError) -> RingAbandoned:
    """The error that closes the channel, with the values seen (read once more)."""
    try:
        values = f"read_index {ring.read_index}, write_index {ring.write_index}"
    except (TransportError, ValueError):
        values = "indices unreadable"
    return RingAbandoned(
        f"abandoning the ring: {ring.name} {values}, data area {ring.dsize} bytes ({exc})",
        field=exc.field,
    )


def wait_interrupt(transport: Any) -> None:
    """Block until the host signals (the interrupt count itself is not needed)."""
    try:
        os.read(transport.fileno(), 4)
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        node = f"/dev/{transport.uio_name}"
        if exc.errno == errno.EIO:
            raise TransportError(f"{node}: device rescinded by the host") from exc
        raise TransportError(f"{node}: read failed: {exc.strerror}") from exc


BadPacket = Callable[[RingError, int], None]
Answer = Callable[[bytes], bytes | bytearray | None]


def drain(transport: Any, answer: Answer, after_reply: Callable[[], None],
          bad_packet: BadPacket) -> bool:
    """Answer every packet in RX, re-enable interrupts, and go again if packets
    arrived while they were masked (those raised no interrupt). True when at least
    one reply went out. Raises RingAbandoned for an index out of range or a full
    TX ring; ``bad_packet(error, dropped_bytes)`` hears of skipped packets."""
    try:
        return _drain(transport, answer, after_reply, bad_packet)
    except RingAbandoned:
        raise
    except RingError as exc:
        if exc.field not in _INDICES:
            raise
        rx = transport.rx
        raise abandon(rx if str(exc).startswith(rx.name) else transport.tx, exc) from exc


def _drain(transport: Any, answer: Answer, after_reply: Callable[[], None],
           bad_packet: BadPacket) -> bool:
    answered_any = False
    while True:
        answered = False
        while True:
            try:
                got = transport.rx.read_packet()
            except RingError as exc:
                dropped = skip_queued(transport.rx)
                if dropped is None:
                    raise
                bad_packet(exc, dropped)
                continue
            if got is None:
                break
            descriptor, payload = got
            if descriptor.type != VM_PKT_DATA_INBAND:
                # IC traffic is in-band data only; a completion or other type
                # asks for no answer.
                log.warning("fcopy: VMBus packet type %d ignored", descriptor.type)
                continue
            reply = answer(payload)
            if reply is not None:
                transport.tx.write_packet(reply, descriptor.trans_id)
                answered = True
        more = transport.rearm()
        if answered:
            after_reply()
            answered_any = True
        if not more:
            return answered_any


def skip_queued(rx: Any) -> int | None:
    """Drop what the host queued on RX; the bytes dropped, or None when the indices
    themselves are out of range (then nothing is skipped: the ring is abandoned)."""
    try:
        w = rx.write_index
        if w >= rx.dsize or rx.read_index >= rx.dsize:
            return None
        dropped: int = rx.available
        rx.read_index = w
    except TransportError:
        return None
    return dropped
