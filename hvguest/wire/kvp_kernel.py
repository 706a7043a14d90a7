"""The kernel's KVP conversions (``drivers/hv/hv_kvp.c``), for a simulator playing the
kernel between a host and the daemon.

* ``kvp_host_to_daemon``: host body (after the IC header) -> 7432-byte daemon message
  (``kvp_send_key`` / ``process_ib_ipinfo``).
* ``kvp_daemon_to_host``: daemon reply -> status and the host body modified in place
  (``kvp_respond_to_host`` / ``process_ob_ipinfo``).

The string converters reproduce the kernel's ``utf16s_to_utf8s`` / ``utf8s_to_utf16s``
(``fs/nls/nls_base.c``): UTF-16 input stops at a 0 unit or after ``inlen`` units (the KVP
driver passes byte counts as unit counts), unpaired surrogates are skipped, output stops
at the first character that no longer fits (current kernels; older ones skipped it and
went on, see ``skip_oversized``), and invalid UTF-8 is an error (the host then gets HV_E_FAIL).
"""

from __future__ import annotations

from hvguest.errors import WireError
from hvguest.wire import kvp_layout as layout
from hvguest.wire._codec import cut_nul, get_uint, pack_uint, put
from hvguest.wire.status import HvStatus

# What the kernel lets the host see: 254 / 1022 code units per enumerated key / value.
ENUM_KEY_MAX_UNITS = layout.HV_KVP_EXCHANGE_MAX_KEY_SIZE // 2 - 2
ENUM_VALUE_MAX_UNITS = layout.HV_KVP_EXCHANGE_MAX_VALUE_SIZE // 2 - 2

_SURROGATE_MASK = 0xF800
_SURROGATE_PAIR = 0xD800
_SURROGATE_LOW = 0x0400


def kernel_utf16_to_utf8(
    data: bytes, inlen: int, maxout: int, *, skip_oversized: bool = False
) -> bytes:
    """``utf16s_to_utf8s(data, inlen units, LE, out, maxout bytes)``: never fails.

    A character that no longer fits ends the output (kernels since the late-2025 fix
    "NLS: stop filling the buffer once a character does not fit"); ``skip_oversized``
    models older kernels, which skipped it and went on with later, shorter characters.
    """
    units = [get_uint(data, i, 2) for i in range(0, len(data) - 1, 2)][: max(inlen, 0)]
    out = bytearray()
    pos = 0
    while pos < len(units) and len(out) < maxout:
        unit = units[pos]
        if unit == 0:
            break
        pos += 1
        code = unit
        if unit & _SURROGATE_MASK == _SURROGATE_PAIR:
            if unit & _SURROGATE_LOW:
                continue  # a low surrogate without its high half is skipped
            if pos >= len(units):
                break
            low = units[pos]
            if low & _SURROGATE_MASK != _SURROGATE_PAIR or not low & _SURROGATE_LOW:
                continue  # a high surrogate without its low half is skipped
            code = 0x10000 + ((unit & 0x3FF) << 10) + (low & 0x3FF)
            pos += 1
        encoded = chr(code).encode("utf-8")
        if len(encoded) > maxout - len(out):
            if skip_oversized:
                continue
            break
        out += encoded
    return bytes(out)


def _utf8_to_utf16(data: bytes, maxout: int) -> tuple[bytes, int | None]:
    """The units ``utf8s_to_utf16s`` stores, and the offset of the invalid byte where it
    returns -EINVAL (None on success)."""
    raw = cut_nul(data)
    invalid_at: int | None = None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = raw[: exc.start].decode("utf-8")
        invalid_at = exc.start
    out = bytearray()
    units = 0
    for char in text:
        need = 2 if ord(char) >= 0x10000 else 1
        if units >= maxout or units + need > maxout:
            return bytes(out), None
        out += char.encode("utf-16-le")
        units += need
    if invalid_at is not None and units < maxout:
        return bytes(out), invalid_at
    return bytes(out), None


def kernel_utf8_to_utf16(data: bytes, maxout: int) -> bytes:
    """``utf8s_to_utf16s(s, strlen(s), LE, out, maxout units)`` as UTF-16LE bytes.

    WireError (field "utf8") where the kernel returns -EINVAL: an invalid UTF-8 sequence
    met before the output is full.
    """
    out, invalid_at = _utf8_to_utf16(data, maxout)
    if invalid_at is not None:
        raise WireError(
            f"string is not valid UTF-8 at byte {invalid_at}", field="utf8", limit="UTF-8"
        )
    return out


def kernel_utf8_to_utf16_partial(data: bytes, maxout: int) -> tuple[bytes, bool]:
    """``utf8s_to_utf16s`` as the kernel leaves its buffer: the units stored and whether
    the conversion succeeded.

    On -EINVAL the kernel has already stored the units before the invalid sequence, and
    ``hv_kvp.c`` sends them to the host along with HV_E_FAIL; a caller reproducing the
    host's bytes on failure needs them, which the raising form cannot give.
    """
    out, invalid_at = _utf8_to_utf16(data, maxout)
    return out, invalid_at is None


def _utf16_into(host: bytearray, offset: int, size: int, text: bytes) -> None:
    """Store converted units like the kernel: no terminator written, field bounds kept."""
    put(host, offset, text[:size])


def kvp_host_to_daemon(host_body: bytes, *, skip_oversized: bool = False) -> bytes:
    """The 7432-byte message the kernel queues to the daemon for a host KVP body.

    ``skip_oversized`` picks the older kernels' string conversion (see
    ``kernel_utf16_to_utf8``).
    """
    host = bytes(host_body[: layout.KVP_MSG_SIZE]).ljust(layout.KVP_MSG_SIZE, b"\0")
    op, pool = host[layout.OP_OFFSET], host[layout.POOL_OFFSET]
    msg = bytearray(layout.KVP_MSG_SIZE)
    msg[layout.OP_OFFSET], msg[layout.POOL_OFFSET] = op, pool

    def to_utf8(offset: int, inlen: int, maxout: int) -> bytes:
        return kernel_utf16_to_utf8(host[offset:], inlen, maxout, skip_oversized=skip_oversized)

    def key_from(size_offset: int, key_offset: int, out_size: int, out_key: int) -> None:
        inlen = get_uint(host, size_offset, 4)
        key = to_utf8(key_offset, inlen, layout.HV_KVP_EXCHANGE_MAX_KEY_SIZE - 1)
        put(msg, out_key, key)
        put(msg, out_size, pack_uint(len(key) + 1, 4, "key_size"))

    if op in (layout.KvpOp.GET_IP_INFO, layout.KvpOp.SET_IP_INFO):
        # Host layout is hv_kvp_ip_msg: every field sits 2 bytes lower.
        fields = (
            layout.IP_STRING_FIELDS if op == layout.KvpOp.SET_IP_INFO else (layout.IP_ADAPTER_ID,)
        )
        for spec in fields:
            text = to_utf8(spec.host_offset, spec.kernel_limit, spec.kernel_limit)
            put(msg, spec.daemon_offset, text[: spec.size])
        if op == layout.KvpOp.SET_IP_INFO:
            msg[layout.IP_DHCP_ENABLED_OFFSET] = host[layout.IP_DHCP_ENABLED_OFFSET - 2]
        msg[layout.IP_ADDR_FAMILY_OFFSET] = host[layout.IP_ADDR_FAMILY_OFFSET - 2]
    elif op == layout.KvpOp.SET:
        vtype = get_uint(host, layout.GET_VALUE_TYPE_OFFSET, 4)
        value: bytes | None = None
        if vtype == layout.RegType.REG_SZ:
            inlen = get_uint(host, layout.GET_VALUE_SIZE_OFFSET, 4)
            value = to_utf8(
                layout.GET_VALUE_OFFSET, inlen, layout.HV_KVP_EXCHANGE_MAX_VALUE_SIZE - 1
            )
        elif vtype == layout.RegType.REG_U32:
            value = str(get_uint(host, layout.GET_VALUE_OFFSET, 4)).encode()
        elif vtype == layout.RegType.REG_U64:
            value = str(get_uint(host, layout.GET_VALUE_OFFSET, 8)).encode()
        if value is not None:  # unknown types leave value and value_size zero
            put(msg, layout.GET_VALUE_OFFSET, value)
            put(msg, layout.GET_VALUE_SIZE_OFFSET, pack_uint(len(value) + 1, 4, "value_size"))
        key_from(
            layout.GET_KEY_SIZE_OFFSET,
            layout.GET_KEY_OFFSET,
            layout.GET_KEY_SIZE_OFFSET,
            layout.GET_KEY_OFFSET,
        )
    elif op == layout.KvpOp.GET:
        key_from(
            layout.GET_KEY_SIZE_OFFSET,
            layout.GET_KEY_OFFSET,
            layout.GET_KEY_SIZE_OFFSET,
            layout.GET_KEY_OFFSET,
        )
    elif op == layout.KvpOp.DELETE:
        key_from(
            layout.DELETE_KEY_SIZE_OFFSET,
            layout.DELETE_KEY_OFFSET,
            layout.DELETE_KEY_SIZE_OFFSET,
            layout.DELETE_KEY_OFFSET,
        )
    elif op == layout.KvpOp.ENUMERATE:
        put(
            msg,
            layout.ENUM_INDEX_OFFSET,
            host[layout.ENUM_INDEX_OFFSET : layout.ENUM_INDEX_OFFSET + 4],
        )
    return bytes(msg)


def kvp_daemon_to_host(op: int, host_body: bytes, reply: bytes) -> tuple[int, bytes]:
    """Status for the IC header and the host body after the kernel copied the reply in.

    ``op`` is the operation of the host request (the kernel remembers it; a reply's
    first four bytes are the status). Reply strings are read with ``strlen`` like the
    kernel does, so a field without NUL runs on into the next one. The body keeps its
    length: bytes the kernel would write beyond it are never sent.
    """
    reply = bytes(reply[: layout.KVP_MSG_SIZE]).ljust(layout.KVP_MSG_SIZE, b"\0")
    status = get_uint(reply, 0, 4)
    host = bytearray(bytes(host_body).ljust(layout.KVP_MSG_SIZE, b"\0"))
    length = len(host_body)
    if status != 0 or op in (layout.KvpOp.SET_IP_INFO, layout.KvpOp.SET, layout.KvpOp.DELETE):
        return status, bytes(host[:length])
    try:
        if op == layout.KvpOp.GET_IP_INFO:
            for spec in layout.IP_STRING_FIELDS:
                units = kernel_utf8_to_utf16(reply[spec.daemon_offset :], spec.kernel_limit)
                _utf16_into(host, spec.host_offset, spec.size, units)
            host[layout.IP_DHCP_ENABLED_OFFSET - 2] = reply[layout.IP_DHCP_ENABLED_OFFSET]
            host[layout.IP_ADDR_FAMILY_OFFSET - 2] = reply[layout.IP_ADDR_FAMILY_OFFSET]
            return status, bytes(host[:length])
        if op == layout.KvpOp.GET:
            value_type_at, value_size_at, value_at = (
                layout.GET_VALUE_TYPE_OFFSET,
                layout.GET_VALUE_SIZE_OFFSET,
                layout.GET_VALUE_OFFSET,
            )
        else:  # ENUMERATE, and any other operation the kernel passed through
            value_type_at, value_size_at, value_at = (
                layout.ENUM_VALUE_TYPE_OFFSET,
                layout.ENUM_VALUE_SIZE_OFFSET,
                layout.ENUM_VALUE_OFFSET,
            )
            key = kernel_utf8_to_utf16(reply[layout.ENUM_KEY_OFFSET :], ENUM_KEY_MAX_UNITS)
            _utf16_into(host, layout.ENUM_KEY_OFFSET, layout.HV_KVP_EXCHANGE_MAX_KEY_SIZE, key)
            put(host, layout.ENUM_KEY_SIZE_OFFSET, pack_uint(len(key) + 2, 4, "key_size"))
        value = kernel_utf8_to_utf16(reply[layout.GET_REPLY_VALUE_OFFSET :], ENUM_VALUE_MAX_UNITS)
        _utf16_into(host, value_at, layout.HV_KVP_EXCHANGE_MAX_VALUE_SIZE, value)
        put(host, value_size_at, pack_uint(len(value) + 2, 4, "value_size"))
        put(host, value_type_at, pack_uint(layout.RegType.REG_SZ, 4, "value_type"))
    except WireError:
        status = HvStatus.HV_E_FAIL
    return status, bytes(host[:length])
