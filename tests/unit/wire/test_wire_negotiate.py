"""Version negotiation, checked against the rules of vmbus_prep_negotiate_resp."""

from __future__ import annotations

import pytest
from wire_golden import u16, u32

from hvguest.wire import icmsg
from hvguest.wire.icmsg import IcVersion as V
from hvguest.wire.status import HvStatus


def request(fw: list[V], srv: list[V]) -> bytes:
    return icmsg.build_negotiate_request(fw, srv)


def counts(payload: bytes) -> tuple[int, int]:
    return int.from_bytes(payload[28:30], "little"), int.from_bytes(payload[30:32], "little")


def test_request_layout() -> None:
    payload = request([V(3, 0), V(1, 0)], [V(4, 0)])
    assert len(payload) == 28 + 8 + 12
    header = icmsg.IcHeader.decode(payload)
    assert header.msgtype == icmsg.IcMsgType.NEGOTIATE
    assert header.msgsize == 8 + 12
    assert header.flags == icmsg.ICMSG_REQUEST_FLAGS
    assert payload[28:36] == u16(2) + u16(1) + bytes(4)
    assert payload[36:48] == u16(3) + u16(0) + u16(1) + u16(0) + u16(4) + u16(0)


def test_kvp_prefers_its_own_order() -> None:
    host = request([V(1, 0), V(3, 0)], [V(1, 0), V(3, 0), V(4, 0), V(5, 0)])
    response, fw, srv = icmsg.negotiate_response(
        host, icmsg.KVP_FW_VERSIONS, icmsg.KVP_SRV_VERSIONS
    )
    assert (fw, srv) == (V(3, 0), V(4, 0))
    assert len(response) == len(host)
    assert counts(response) == (1, 1)
    assert response[36:44] == u16(3) + u16(0) + u16(4) + u16(0)
    assert response[44:] == host[44:]  # the rest stays as received
    header = icmsg.IcHeader.decode(response)
    assert header.msgsize == 16
    assert header.flags == icmsg.ICMSG_RESPONSE_FLAGS
    assert header.status == HvStatus.HV_S_OK
    assert icmsg.parse_negotiate_response(response) == (0, V(3, 0), V(4, 0))


def test_exact_match_only() -> None:
    # 3.1 is not 3.0: the framework walk needs major and minor to match
    host = request([V(3, 1)], [V(4, 0)])
    response, fw, srv = icmsg.negotiate_response(
        host, icmsg.KVP_FW_VERSIONS, icmsg.KVP_SRV_VERSIONS
    )
    assert (fw, srv) == (None, None)
    assert counts(response) == (0, 0)
    assert response[20:24] == u32(HvStatus.HV_E_FAIL)
    # on a framework miss the kernel writes the raw counts as "major" of both slots
    assert response[36:44] == u16(1) + u16(0) + u16(1) + u16(0)
    assert icmsg.parse_negotiate_response(response) == (HvStatus.HV_E_FAIL, None, None)


def test_service_miss_keeps_framework_slot() -> None:
    host = request([V(3, 0)], [V(2, 0), V(6, 0)])
    response, fw, srv = icmsg.negotiate_response(
        host, icmsg.VSS_FW_VERSIONS, icmsg.VSS_SRV_VERSIONS
    )
    assert (fw, srv) == (None, None)
    assert counts(response) == (0, 0)
    assert response[36:44] == u16(3) + u16(0) + u16(2) + u16(0)


def test_service_versions_are_searched_after_the_framework_entries() -> None:
    # 1.1 appears only among the framework entries: it must not be taken as a service
    host = request([V(3, 0), V(1, 1)], [V(2, 0)])
    _, fw, srv = icmsg.negotiate_response(host, icmsg.FCOPY_FW_VERSIONS, icmsg.FCOPY_SRV_VERSIONS)
    assert (fw, srv) == (None, None)
    host = request([V(3, 0)], [V(2, 0), V(1, 1)])
    _, fw, srv = icmsg.negotiate_response(host, icmsg.FCOPY_FW_VERSIONS, icmsg.FCOPY_SRV_VERSIONS)
    assert (fw, srv) == (V(3, 0), V(1, 1))


@pytest.mark.parametrize(("n", "m"), [(101, 0), (0, 101), (200, 200)])
def test_too_many_versions(n: int, m: int) -> None:
    payload = bytearray(request([V(3, 0)] * 1, [V(4, 0)]))
    payload[28:32] = u16(n) + u16(m)
    payload += bytes(4 * (n + m))
    response, fw, srv = icmsg.negotiate_response(
        bytes(payload), icmsg.KVP_FW_VERSIONS, icmsg.KVP_SRV_VERSIONS
    )
    assert (fw, srv) == (None, None)
    assert counts(response) == (0, 0)
    assert response[36:44] == u16(n) + u16(0) + u16(m) + u16(0)


def test_counts_beyond_the_packet() -> None:
    host = request([V(3, 0)], [V(4, 0)])
    truncated = host[:-4]  # claims 2 versions, holds 1
    response, fw, srv = icmsg.negotiate_response(
        truncated, icmsg.KVP_FW_VERSIONS, icmsg.KVP_SRV_VERSIONS
    )
    assert (fw, srv) == (None, None)
    assert len(response) == len(truncated)
    assert counts(response) == (0, 0)


def test_exactly_100_versions_accepted() -> None:
    host = request([V(9, i) for i in range(99)] + [V(3, 0)], [V(4, 0)] * 100)
    _, fw, srv = icmsg.negotiate_response(host, icmsg.KVP_FW_VERSIONS, icmsg.KVP_SRV_VERSIONS)
    assert (fw, srv) == (V(3, 0), V(4, 0))


def test_payload_too_short_for_counts() -> None:
    payload = request([V(3, 0)], [V(4, 0)])[:31]
    response, fw, srv = icmsg.negotiate_response(
        payload, icmsg.KVP_FW_VERSIONS, icmsg.KVP_SRV_VERSIONS
    )
    assert (fw, srv) == (None, None)
    assert len(response) == 31
    # only status and flags change; icmsgsize is left as received
    assert response[18:20] == payload[18:20]
    assert response[20:24] == u32(HvStatus.HV_E_FAIL) and response[25] == 5
    assert response[26:] == payload[26:]


def test_payload_too_short_for_version_slots() -> None:
    # 0/0 counts in a 36-byte packet: valid but nothing matches; the slots lie beyond it
    payload = request([], [])
    assert len(payload) == 36
    response, fw, srv = icmsg.negotiate_response(
        payload, icmsg.KVP_FW_VERSIONS, icmsg.KVP_SRV_VERSIONS
    )
    assert (fw, srv) == (None, None)
    assert len(response) == 36


@pytest.mark.parametrize(
    ("fw", "srv"),
    [
        (icmsg.HEARTBEAT_FW_VERSIONS, icmsg.HEARTBEAT_SRV_VERSIONS),
        (icmsg.SHUTDOWN_FW_VERSIONS, icmsg.SHUTDOWN_SRV_VERSIONS),
        (icmsg.TIMESYNC_FW_VERSIONS, icmsg.TIMESYNC_SRV_VERSIONS),
        (icmsg.KVP_FW_VERSIONS, icmsg.KVP_SRV_VERSIONS),
        (icmsg.VSS_FW_VERSIONS, icmsg.VSS_SRV_VERSIONS),
        (icmsg.FCOPY_FW_VERSIONS, icmsg.FCOPY_SRV_VERSIONS),
    ],
)
def test_guest_tables_agree_with_themselves(fw: tuple[V, ...], srv: tuple[V, ...]) -> None:
    host = request(list(reversed(fw)), list(reversed(srv)))
    _, got_fw, got_srv = icmsg.negotiate_response(host, fw, srv)
    assert (got_fw, got_srv) == (fw[0], srv[0])


def test_version_tables_match_reference() -> None:
    assert [v.packed for v in icmsg.SHUTDOWN_SRV_VERSIONS] == [196610, 196609, 196608, 65536]
    assert [v.packed for v in icmsg.TIMESYNC_SRV_VERSIONS] == [262144, 196608, 65536]
    assert [v.packed for v in icmsg.HEARTBEAT_SRV_VERSIONS] == [196608, 65536]
    assert [v.packed for v in icmsg.VSS_SRV_VERSIONS] == [327680]
    assert [v.packed for v in icmsg.FCOPY_SRV_VERSIONS] == [65537]
    assert [v.packed for v in icmsg.UTIL_FW_VERSIONS] == [196608, 65536]
