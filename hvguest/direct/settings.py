"""Config section "direct" (``hvguestctl direct``, hvguest-kvpd, hvguest-direct-keys)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hvguest.configschema import config_section, setting
from hvguest.direct.guid import MAX_PORT, MIN_PORT

# Portable user names (useradd's default rule, without a trailing '$').
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}", re.ASCII)


def check_user_name(value: str) -> str | None:
    if value == "" or _USER_NAME.fullmatch(value):
        return None
    shown = value[:40].encode("unicode_escape").decode("ascii")
    return (f"{shown!r} is not a user name (lower-case letters, digits, '_' and '-', "
            "starting with a letter or '_', at most 32 characters)")


@config_section("direct", help="Host access with no network: SSH over Hyper-V sockets (vsock)")
@dataclass(frozen=True)
class DirectSettings:
    enabled: bool = setting(
        False,
        help=(
            "listen for SSH on AF_VSOCK (Hyper-V sockets) for the host's 'hvc ssh';\n"
            "set with 'hvguestctl direct enable|disable', which also starts or stops\n"
            "hvguest-direct.socket and tells the host through KVP pool 1 (hvguest.direct)"
        ),
    )
    port: int = setting(
        22,
        help=(
            "vsock port; the host connects to service GUID <port as 8 hex digits>-facb-\n"
            "11e6-bd58-64006a7986d3 (22: 00000016-...)"
        ),
        min=MIN_PORT,
        max=MAX_PORT,
    )
    authorized_keys_from_host: bool = setting(
        False,
        help=(
            "also accept, for 'user' only, the public keys the host places in KVP pool 0\n"
            "as hvguest.ssh.authorized_key.0 .. .99 (one key per item, no options)"
        ),
    )
    user: str = setting(
        "",
        help="the one account the host's keys from KVP log in to (needed by the above)",
        validate=check_user_name,
    )

    def __post_init__(self) -> None:
        if self.authorized_keys_from_host and not self.user:
            raise ValueError(
                "authorized_keys_from_host is true but user is empty: name the one "
                "account the host's keys may log in to (direct.user)"
            )
