"""Port <-> Hyper-V socket service GUID, both directions, with the format checks."""

from __future__ import annotations

import pytest

from hvguest.direct.guid import (
    MAX_PORT,
    ServiceGuidError,
    port_of_service_guid,
    service_guid,
)

TAIL = "-facb-11e6-bd58-64006a7986d3"


@pytest.mark.parametrize(("port", "guid"), [
    (22, "00000016" + TAIL),
    (1, "00000001" + TAIL),
    (2222, "000008ae" + TAIL),
    (0x7FFFFFFF, "7fffffff" + TAIL),
])
def test_both_directions(port: int, guid: str) -> None:
    assert service_guid(port) == guid
    assert port_of_service_guid(guid) == port
    assert port_of_service_guid(guid.upper()) == port


@pytest.mark.parametrize("port", range(1, 70000, 997))
def test_round_trip(port: int) -> None:
    assert port_of_service_guid(service_guid(port)) == port


@pytest.mark.parametrize("port", [0, -1, MAX_PORT + 1, 0xFFFFFFFF, 1 << 40, True, 22.0, "22"])
def test_ports_hv_sock_refuses(port: object) -> None:
    with pytest.raises(ServiceGuidError):
        service_guid(port)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [
    "999e53d4-3d5c-4c3e-8779-bed06ec056e1",     # PowerShell Direct's session service
    "{00000016" + TAIL + "}",                   # braces
    " 00000016" + TAIL,                         # space
    "00000016" + TAIL + "\n",                   # trailing line feed
    "0000016" + TAIL,                           # 7 digits
    "000000016" + TAIL,                         # 9 digits
    "0000001g" + TAIL,                          # not hex
    "00000016-facb-11e6-bd58-64006a7986d4",     # template's last digit
    "00000016-facb-11e6-bd5864006a7986d3",      # a dash missing
    "00000016facb11e6bd5864006a7986d3",         # no dashes
    "00000000" + TAIL,                          # port 0
    "80000000" + TAIL,                          # host ephemeral range
    "ffffffff" + TAIL,                          # VMADDR_PORT_ANY
    "０００００016" + TAIL,                       # full-width digits
    "",
])
def test_malformed_service_guids(text: str) -> None:
    with pytest.raises(ServiceGuidError) as exc:
        port_of_service_guid(text)
    assert "\n" not in str(exc.value)


def test_not_text() -> None:
    with pytest.raises(ServiceGuidError):
        port_of_service_guid(b"00000016" + TAIL.encode())  # type: ignore[arg-type]
