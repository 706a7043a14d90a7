"""Inputs that scripts/fuzz found crashing a decoder, pinned as regular tests."""

from __future__ import annotations

import pytest

from hvguest.errors import WireError
from hvguest.wire import kvp


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("size", [0, 261, kvp.KVP_MSG_SIZE - 1])
def test_ip_info_from_a_short_buffer_is_a_wire_error(size: int, strict: bool) -> None:
    # fuzz target kvp_ip_info, reproducer '' (an empty buffer): IndexError on the
    # addr_family byte @260 instead of a WireError naming the length
    with pytest.raises(WireError) as info:
        kvp.KvpIpInfo.read_from(bytes(size), strict=strict)
    assert info.value.field == "length" and info.value.limit == kvp.KVP_MSG_SIZE
