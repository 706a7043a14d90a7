"""KVP replies (daemon -> kernel): the request echoed with the u32 status @0 and, for
GET, ENUMERATE and GET_IP_INFO, the answer where the kernel reads it (protocol.md
§2.3); and the kernel's view of such a reply, for the simulator. Import the names
from ``kvp``.
"""

from __future__ import annotations

from dataclasses import dataclass

from hvguest.wire._codec import (
    check_min_length,
    cut_nul,
    get_uint,
    pack_status,
    put,
    utf8_field,
    utf8_text,
)
from hvguest.wire.kvp_layout import (
    ENUM_KEY_OFFSET,
    ENUM_VALUE_OFFSET,
    GET_REPLY_VALUE_OFFSET,
    HV_KVP_EXCHANGE_MAX_KEY_SIZE,
    HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    KVP_MSG_SIZE,
    STATUS_OFFSET,
    KvpOp,
)
from hvguest.wire.kvp_request import KvpIpInfo

__all__ = [
    "KvpReply",
    "decode_kvp_reply",
    "kvp_enumerate_reply",
    "kvp_get_reply",
    "kvp_ip_info_reply",
    "kvp_reply",
]


_STATUS_WORDS: dict[int, bytes] = {}  # status -> its 4 bytes (a handful of statuses occur)
_ZEROS = memoryview(bytes(HV_KVP_EXCHANGE_MAX_VALUE_SIZE))
_VALUE_END = ENUM_VALUE_OFFSET + HV_KVP_EXCHANGE_MAX_VALUE_SIZE


def _status_word(status: int) -> bytes:
    word = _STATUS_WORDS.get(status)
    if word is None:
        word = pack_status(status)  # WireError for a status that does not fit
        if len(_STATUS_WORDS) < 64:
            _STATUS_WORDS[status] = word
    return word


def kvp_reply(request: bytes, status: int) -> bytes:
    """The request echoed (padded or cut to 7432 bytes) with the u32 status @0."""
    word = _status_word(status)
    if len(request) == KVP_MSG_SIZE:  # every well-formed request: one copy
        return b"".join((word, memoryview(request)[STATUS_OFFSET + 4 :]))
    buf = bytearray(bytes(request[:KVP_MSG_SIZE]).ljust(KVP_MSG_SIZE, b"\0"))
    put(buf, STATUS_OFFSET, word)
    return bytes(buf)


def _field(text: str, field: str, size: int) -> bytes:
    """``text`` as UTF-8 without its NUL padding; WireError as ``utf8_field`` gives."""
    try:
        raw = text.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):
        raw = b"\0"  # not a str, or a lone surrogate: utf8_field says which
    if len(raw) >= size or b"\0" in raw:
        raw = utf8_field(text, field, size)  # raises (it would return raw padded)
    return raw


def _answer(request: bytes, key: str | None, value: str) -> bytes:
    """Status 0 with ``key`` @20 (None: the request's bytes stay) and ``value`` @532,
    built in one copy."""
    raw_value = _field(value, "value", HV_KVP_EXCHANGE_MAX_VALUE_SIZE)
    if len(request) != KVP_MSG_SIZE:
        buf = bytearray(kvp_reply(request, 0))
        if key is not None:
            put(buf, ENUM_KEY_OFFSET, utf8_field(key, "key", HV_KVP_EXCHANGE_MAX_KEY_SIZE))
        put(buf, ENUM_VALUE_OFFSET, raw_value.ljust(HV_KVP_EXCHANGE_MAX_VALUE_SIZE, b"\0"))
        return bytes(buf)
    view = memoryview(request)
    value_pad = _ZEROS[: HV_KVP_EXCHANGE_MAX_VALUE_SIZE - len(raw_value)]
    if key is None:
        return b"".join(
            (_status_word(0), view[4:ENUM_VALUE_OFFSET], raw_value, value_pad, view[_VALUE_END:])
        )
    raw_key = _field(key, "key", HV_KVP_EXCHANGE_MAX_KEY_SIZE)
    key_pad = _ZEROS[: HV_KVP_EXCHANGE_MAX_KEY_SIZE - len(raw_key)]
    return b"".join((
        _status_word(0), view[4:ENUM_KEY_OFFSET], raw_key, key_pad, raw_value, value_pad,
        view[_VALUE_END:],
    ))


def kvp_enumerate_reply(request: bytes, key: str, value: str) -> bytes:
    """Status 0 with the item's key @20 and value @532 (whole fields zero-filled).

    WireError if the key exceeds 511 or the value 2047 UTF-8 bytes.
    """
    return _answer(request, key, value)


def kvp_get_reply(request: bytes, value: str) -> bytes:
    """Status 0 with the value where the kernel reads it: offset 532.

    The kernel converts a GET reply's value from the ENUMERATE value slot (@532), not
    from the GET view's ``value`` (@528). The C daemon copies the value to @528 (and only
    ``value_size`` = 0 bytes of it), so with the C daemon the host always receives an
    empty string; writing @532 delivers the real value. The key @16..527 is untouched.
    """
    return _answer(request, None, value)


def kvp_ip_info_reply(request: bytes, info: KvpIpInfo) -> bytes:
    """Status 0 with every IP field (GET_IP_INFO answer) at its daemon-side offset."""
    buf = bytearray(kvp_reply(request, 0))
    info.write_into(buf)
    return bytes(buf)


@dataclass(frozen=True)
class KvpReply:
    """A daemon reply as the kernel reads it (for the simulator).

    ``key``/``value``/``ip_info`` are filled only for status 0 and the operations whose
    reply the kernel converts: ENUMERATE (key, value), GET (value), GET_IP_INFO (ip_info).
    """

    status: int
    key: str | None = None
    value: str | None = None
    ip_info: KvpIpInfo | None = None


def _reply_text(buf: bytes, offset: int, size: int, field: str) -> str:
    return utf8_text(cut_nul(bytes(buf[offset : offset + size])), field)


def decode_kvp_reply(op: int, buf: bytes) -> KvpReply:
    """Decode a daemon reply to a request of operation ``op``.

    Lenient like the kernel: at least 7432 bytes, strings cut at the first NUL (or taken
    whole), but invalid UTF-8 is a WireError (the kernel answers the host HV_E_FAIL).
    """
    check_min_length(buf, KVP_MSG_SIZE, "KVP reply")
    status = get_uint(buf, STATUS_OFFSET, 4)
    if status != 0:
        return KvpReply(status)
    if op == KvpOp.ENUMERATE:
        return KvpReply(
            status,
            key=_reply_text(buf, ENUM_KEY_OFFSET, HV_KVP_EXCHANGE_MAX_KEY_SIZE, "key"),
            value=_reply_text(buf, ENUM_VALUE_OFFSET, HV_KVP_EXCHANGE_MAX_VALUE_SIZE, "value"),
        )
    if op == KvpOp.GET:
        return KvpReply(
            status,
            value=_reply_text(buf, GET_REPLY_VALUE_OFFSET, HV_KVP_EXCHANGE_MAX_VALUE_SIZE, "value"),
        )
    if op == KvpOp.GET_IP_INFO:
        return KvpReply(status, ip_info=KvpIpInfo.read_from(buf, strict=False))
    return KvpReply(status)
