"""The raw VMBus ring's side of hvguest-fcopyd (kernels >= 6.10): IC framing.

On the ring hvguest answers the IC version negotiation itself and each fcopy
message comes inside an IC header whose response echoes it; ``ic_reply`` says what
to answer one packet, with ``FcopyService`` deciding the file copy itself.
"""

from __future__ import annotations

import logging

from hvguest.daemons.fcopy_service import FcopyService
from hvguest.wire.icmsg import (
    FCOPY_FW_VERSIONS,
    FCOPY_SRV_VERSIONS,
    ICMSG_HDR_SIZE,
    IcMsgType,
    ic_msgtype,
    negotiate_response,
)
from hvguest.wire.status import HvStatus

_MSG_FCOPY = int(IcMsgType.FCOPY)  # an int compares faster than the enum, per fragment

log = logging.getLogger(__name__)


def ic_reply(service: FcopyService, payload: bytes | memoryview) -> bytes | int | None:
    """What to answer one IC packet from the ring (``transport.uio_ring.Reply``): the
    status of the response that echoes it, a NEGOTIATE response, or None when it
    cannot be answered (too short to carry an IC header)."""
    if len(payload) < ICMSG_HDR_SIZE:
        log.warning("fcopy: %d-byte packet has no IC header; skipped", len(payload))
        return None
    msgtype = ic_msgtype(payload)
    if msgtype == _MSG_FCOPY:
        body = memoryview(payload)[ICMSG_HDR_SIZE:]
        status = service.write_fragment(body, len(body))
        return service.handle(bytes(body), utf16=True) if status is None else status
    if msgtype == IcMsgType.NEGOTIATE:
        reply, fw, srv = negotiate_response(
            bytes(payload), FCOPY_FW_VERSIONS, FCOPY_SRV_VERSIONS
        )
        if fw is None or srv is None:
            log.warning("fcopy: version negotiation failed (host offered no 3.0 / 1.1)")
        else:
            log.info("fcopy: negotiated framework %s, service %s", fw, srv)
        return reply
    log.warning("fcopy: IC message type %d is not file copy; answered HV_E_FAIL", msgtype)
    return int(HvStatus.HV_E_FAIL)
