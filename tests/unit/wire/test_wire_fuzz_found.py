"""Inputs that scripts/fuzz found crashing a decoder, pinned as regular tests."""

from __future__ import annotations

import pytest

from hvguest.errors import WireError
from hvguest.wire import fcopy, kvp


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("size", [0, 261, kvp.KVP_MSG_SIZE - 1])
def test_ip_info_from_a_short_buffer_is_a_wire_error(size: int, strict: bool) -> None:
    # fuzz target kvp_ip_info, reproducer '' (an empty buffer): IndexError on the
    # addr_family byte @260 instead of a WireError naming the length
    with pytest.raises(WireError) as info:
        kvp.KvpIpInfo.read_from(bytes(size), strict=strict)
    assert info.value.field == "length" and info.value.limit == kvp.KVP_MSG_SIZE


@pytest.mark.parametrize(
    "op", [kvp.KvpOp.GET, kvp.KvpOp.SET, kvp.KvpOp.DELETE, kvp.KvpOp.ENUMERATE]
)
def test_host_key_filling_its_field_is_refused(op: int) -> None:
    # fuzz target host_kvp, full run of 2026-12-03: a key of
    # 256 UTF-16 units with no 0 unit decoded, and then could not be encoded again
    # (the encoder, like the host and the kernel, keeps room for the 0 unit).
    longest = kvp.HostKvpMessage(op, 0, key="k" * (kvp.HOST_KEY_UNITS - 1))
    buf = bytearray(longest.encode())
    assert kvp.HostKvpMessage.decode(bytes(buf)) == longest
    offset = bytes(buf).index(("k" * (kvp.HOST_KEY_UNITS - 1)).encode("utf-16-le"))
    buf[offset : offset + 2 * kvp.HOST_KEY_UNITS] = "k".encode("utf-16-le") * kvp.HOST_KEY_UNITS
    with pytest.raises(WireError) as info:
        kvp.HostKvpMessage.decode(bytes(buf))
    assert info.value.field == "key"


def test_utf8_name_longer_than_the_kernel_writes_is_refused() -> None:
    # fuzz target fcopy_start_utf8, full run of 2026-12-03: a 260-byte UTF-8 name
    # (the NUL later in the 520-byte field) decoded and could not be encoded again.
    # The kernel writes at most W_MAX_PATH - 1 bytes and a 0.
    longest = fcopy.FcopyStart("n" * (fcopy.W_MAX_PATH - 1), "/tmp")
    buf = bytearray(longest.encode())
    assert fcopy.FcopyStart.decode(bytes(buf)) == longest
    buf[fcopy.FILE_NAME_OFFSET + fcopy.W_MAX_PATH - 1] = ord("n")
    with pytest.raises(WireError) as info:
        fcopy.FcopyStart.decode(bytes(buf))
    assert info.value.field == "file_name"
