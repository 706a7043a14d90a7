"""A vsock port and the Hyper-V socket service GUID the host connects to.

Linux's hv_sock accepts only service GUIDs built from one template,
``<port>-facb-11e6-bd58-64006a7986d3``: the first field (Data1, 8 hex digits) is the
port, the rest is fixed. Any other GUID (PowerShell Direct's session service, for
one) never reaches a Linux listener. Ports above 0x7fffffff are the host's ephemeral
range on older kernels, so a listener stays at or below it. hv_sock reports both
ends' CID as VMADDR_CID_ANY: the port is all that identifies the service.
"""

from __future__ import annotations

import re

from hvguest.errors import LocalUsageError

TEMPLATE_TAIL = "-facb-11e6-bd58-64006a7986d3"
MIN_PORT = 1
MAX_PORT = 0x7FFFFFFF
_SERVICE_GUID = re.compile(r"([0-9a-f]{8})" + re.escape(TEMPLATE_TAIL), re.ASCII)


class ServiceGuidError(LocalUsageError):
    """A port or a service GUID that hv_sock would not accept."""


def check_port(port: object) -> int:
    """``port`` as an int within MIN_PORT..MAX_PORT; ServiceGuidError otherwise."""
    if not isinstance(port, int) or isinstance(port, bool):
        raise ServiceGuidError(f"vsock port must be an integer, got {port!r}")
    if not MIN_PORT <= port <= MAX_PORT:
        raise ServiceGuidError(
            f"vsock port {port} is outside {MIN_PORT}..{MAX_PORT} (0x{MAX_PORT:x}): higher "
            "ports are the Hyper-V host's ephemeral range"
        )
    return port


def service_guid(port: int) -> str:
    """The service GUID for ``port``: 22 -> 00000016-facb-11e6-bd58-64006a7986d3."""
    return f"{check_port(port):08x}{TEMPLATE_TAIL}"


def port_of_service_guid(text: str) -> int:
    """The port a service GUID names. Strict: the canonical 36-character form of the
    hv_sock template, lower or upper case, no braces, no spaces."""
    if not isinstance(text, str):
        raise ServiceGuidError(f"service GUID must be text, got {type(text).__name__}")
    shown = text[:60].encode("unicode_escape").decode("ascii")
    if len(text) != 36:
        raise ServiceGuidError(
            f"service GUID {shown!r} is {len(text)} characters, expected 36 "
            f"(xxxxxxxx{TEMPLATE_TAIL})"
        )
    m = _SERVICE_GUID.fullmatch(text.lower())
    if m is None or not text.isascii():
        raise ServiceGuidError(
            f"service GUID {shown!r} is not of the form xxxxxxxx{TEMPLATE_TAIL}, the only "
            "one Linux's hv_sock accepts"
        )
    port = int(m.group(1), 16)
    try:
        return check_port(port)
    except ServiceGuidError as exc:
        raise ServiceGuidError(f"service GUID {shown!r}: {exc}") from None
