"""IC framing pinned by golden bytes, for both implementations that answer a NEGOTIATE.

``hvguest.wire.icmsg`` answers as the UIO fcopy daemon does (status HV_S_OK or
HV_E_FAIL, nothing written past the packet); the simulator's kernel drivers
(``hvguest.sim.kernel.channel``) answer in place in their receive buffer, keep the
host's status, and write both version slots even past a short packet. The same
request vectors drive both; where the facts are the same the bytes must be too.

The vectors were produced by the simulator's earlier, independent implementation
of ``vmbus_prep_negotiate_resp`` and agree with the rules in protocol.md §1.4.
"""

from __future__ import annotations

import pytest

from hvguest.sim.kernel import channel, service
from hvguest.wire import icmsg
from hvguest.wire.icmsg import IcVersion as V
from hvguest.wire.status import HvStatus

# What a receive buffer holds past the packet before the answer (the kernel's residue).
RESIDUE = bytes([0xAA]) * 16

# name: (host fw, host srv, guest fw, guest srv, request, daemon answer, kernel buffer
# after the answer = answer + what it wrote into RESIDUE, chosen (fw, srv) or None)
VECTORS = {
    "kvp": (
        (V(3, 0), V(1, 0)),
        (V(4, 0), V(3, 0)),
        icmsg.KVP_FW_VERSIONS,
        icmsg.KVP_SRV_VERSIONS,
        "000000002c0000000100000000000100000018000000000007030000"
        "020002000000000003000000010000000400000003000000",
        "000000002c0000000100000000000100000010000000000007050000"
        "010001000000000003000000040000000400000003000000",
        "000000002c0000000100000000000100000010000000000007050000"
        "010001000000000003000000040000000400000003000000" + RESIDUE.hex(),
        (V(3, 0), V(4, 0)),
    ),
    "vss": (
        (V(3, 0),),
        (V(5, 0),),
        icmsg.VSS_FW_VERSIONS,
        icmsg.VSS_SRV_VERSIONS,
        "0000000024000000010000000000010000001000000000000703000001000100000000000300000005000000",
        "0000000024000000010000000000010000001000000000000705000001000100000000000300000005000000",
        "00000000240000000100000000000100000010000000000007050000"
        "01000100000000000300000005000000" + RESIDUE.hex(),
        (V(3, 0), V(5, 0)),
    ),
    "fcopy": (
        (V(3, 0),),
        (V(1, 1),),
        icmsg.FCOPY_FW_VERSIONS,
        icmsg.FCOPY_SRV_VERSIONS,
        "0000000024000000010000000000010000001000000000000703000001000100000000000300000001000100",
        "0000000024000000010000000000010000001000000000000705000001000100000000000300000001000100",
        "00000000240000000100000000000100000010000000000007050000"
        "01000100000000000300000001000100" + RESIDUE.hex(),
        (V(3, 0), V(1, 1)),
    ),
    "heartbeat": (
        (V(3, 0), V(1, 0)),
        (V(3, 0), V(1, 0)),
        icmsg.HEARTBEAT_FW_VERSIONS,
        icmsg.HEARTBEAT_SRV_VERSIONS,
        "000000002c0000000100000000000100000018000000000007030000"
        "020002000000000003000000010000000300000001000000",
        "000000002c0000000100000000000100000010000000000007050000"
        "010001000000000003000000030000000300000001000000",
        "000000002c0000000100000000000100000010000000000007050000"
        "010001000000000003000000030000000300000001000000" + RESIDUE.hex(),
        (V(3, 0), V(3, 0)),
    ),
    "shutdown": (
        (V(3, 0), V(1, 0)),
        (V(3, 2), V(3, 1), V(3, 0), V(1, 0)),
        icmsg.SHUTDOWN_FW_VERSIONS,
        icmsg.SHUTDOWN_SRV_VERSIONS,
        "000000003400000001000000000001000000200000000000070300000200"
        "040000000000030000000100000003000200030001000300000001000000",
        "000000003400000001000000000001000000100000000000070500000100"
        "010000000000030000000300020003000200030001000300000001000000",
        "000000003400000001000000000001000000100000000000070500000100"
        "010000000000030000000300020003000200030001000300000001000000" + RESIDUE.hex(),
        (V(3, 0), V(3, 2)),
    ),
    "timesync": (
        (V(3, 0), V(1, 0)),
        (V(4, 0), V(3, 0), V(1, 0)),
        icmsg.TIMESYNC_FW_VERSIONS,
        icmsg.TIMESYNC_SRV_VERSIONS,
        "0000000030000000010000000000010000001c000000000007030000"
        "02000300000000000300000001000000040000000300000001000000",
        "00000000300000000100000000000100000010000000000007050000"
        "01000100000000000300000004000000040000000300000001000000",
        "00000000300000000100000000000100000010000000000007050000"
        "01000100000000000300000004000000040000000300000001000000" + RESIDUE.hex(),
        (V(3, 0), V(4, 0)),
    ),
    # No version in common: counts 0/0, the slots carry the offered counts as "major".
    # The daemon says HV_E_FAIL (05400080 @20); the kernel leaves the host's status.
    "no-common": (
        (V(2, 0),),
        (V(9, 9),),
        icmsg.KVP_FW_VERSIONS,
        icmsg.KVP_SRV_VERSIONS,
        "0000000024000000010000000000010000001000000000000703000001000100000000000200000009000900",
        "0000000024000000010000000000010000001000054000800705000000000000000000000100000001000000",
        "00000000240000000100000000000100000010000000000007050000"
        "00000000000000000100000001000000" + RESIDUE.hex(),
        None,
    ),
    # A framework version but no service version offered, in a 40-byte packet: the
    # kernel's second slot (0.0) lands past the packet, in the receive buffer.
    "fw-only": (
        (V(3, 0),),
        (),
        icmsg.VSS_FW_VERSIONS,
        icmsg.VSS_SRV_VERSIONS,
        "0000000020000000010000000000010000000c000000000007030000010000000000000003000000",
        "00000000200000000100000000000100000010000540008007050000000000000000000003000000",
        "000000002000000001000000000001000000100000000000070500000000000000000000"
        "03000000" + "00000000" + RESIDUE[4:].hex(),
        None,
    ),
    # Nothing offered (36 bytes): both slots (0.0, 0.0) past the packet.
    "empty": (
        (),
        (),
        icmsg.VSS_FW_VERSIONS,
        icmsg.VSS_SRV_VERSIONS,
        "000000001c00000001000000000001000000080000000000070300000000000000000000",
        "000000001c00000001000000000001000000100005400080070500000000000000000000",
        "000000001c00000001000000000001000000100000000000070500000000000000000000"
        + "00" * 8
        + RESIDUE[8:].hex(),
        None,
    ),
}
NAMES = sorted(VECTORS)


@pytest.mark.parametrize("name", NAMES)
def test_negotiate_request_bytes(name: str) -> None:
    host_fw, host_srv, _, _, request, *_ = VECTORS[name]
    assert icmsg.build_negotiate_request(host_fw, host_srv, trans_id=7).hex() == request


@pytest.mark.parametrize("name", NAMES)
def test_daemon_answer_bytes(name: str) -> None:
    _, _, fw, srv, request, answer, _, chosen = VECTORS[name]
    response, fw_pick, srv_pick = icmsg.negotiate_response(bytes.fromhex(request), fw, srv)
    assert response.hex() == answer
    assert (None if fw_pick is None or srv_pick is None else (fw_pick, srv_pick)) == chosen


@pytest.mark.parametrize("name", NAMES)
def test_kernel_answer_bytes(name: str) -> None:
    _, _, fw, srv, request, _, kernel, chosen = VECTORS[name]
    raw = bytes.fromhex(request)
    buf = bytearray(raw + RESIDUE)
    assert channel.negotiate_response(buf, len(raw), fw, srv) == chosen
    channel.set_response_flags(buf)
    assert buf.hex() == kernel


@pytest.mark.parametrize("name", NAMES)
def test_same_answer_but_for_the_status(name: str) -> None:
    """The one deliberate difference inside the packet: the status @20..23."""
    *_, request, answer, kernel, _ = VECTORS[name]
    length = len(bytes.fromhex(request))
    daemon, driver = bytes.fromhex(answer), bytes.fromhex(kernel)[:length]
    assert daemon[:20] + daemon[24:] == driver[:20] + driver[24:]
    assert driver[20:24] == bytes.fromhex(request)[20:24]


def test_a_packet_too_short_for_the_counts() -> None:
    """Under 32 bytes the kernel touches nothing; the daemon fails it."""
    raw = bytes.fromhex(VECTORS["vss"][4])[:31]
    buf = bytearray(raw + RESIDUE)
    assert channel.negotiate_response(buf, len(raw), icmsg.VSS_FW_VERSIONS, ()) is None
    assert bytes(buf) == raw + RESIDUE
    response, _, _ = icmsg.negotiate_response(raw, icmsg.VSS_FW_VERSIONS, ())
    assert response.hex() == "00000000240000000100000000000100000010000540008007050000010001"


def test_ic_header_fields() -> None:
    header = bytes.fromhex("0100000024000000030000000200040000000c00faceb00c2a020000")
    decoded = icmsg.IcHeader.decode(header)
    assert (decoded.pipe_flags, decoded.pipe_msgsize) == (1, 0x24)
    assert (decoded.framever, decoded.msgver) == (V(3, 0), V(4, 0))
    assert (decoded.msgtype, decoded.msgsize) == (icmsg.IcMsgType.KVPEXCHANGE, 12)
    assert (decoded.status, decoded.trans_id, decoded.flags) == (0x0CB0CEFA, 0x2A, 2)
    assert decoded.encode() == header
    assert channel.msgtype(header) == icmsg.IcMsgType.KVPEXCHANGE
    buf = bytearray(header)
    channel.set_status(buf, HvStatus.HV_E_FAIL)
    channel.set_response_flags(buf)
    assert bytes(buf) == icmsg.ic_response(header, HvStatus.HV_E_FAIL)
    assert buf.hex() == "0100000024000000030000000200040000000c00054000802a050000"


def test_statuses() -> None:
    assert HvStatus.HV_S_OK == 0
    assert HvStatus.HV_E_FAIL == 0x80004005
    assert HvStatus.HV_S_CONT == 0x80070103
    assert service.HV_E_FAIL is HvStatus.HV_E_FAIL
