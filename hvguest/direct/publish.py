"""``hvguest.direct`` in KVP pool 1: how the host learns that direct access is on.

hvguest-kvpd keeps the key (with its other own keys, put back when pool 1 is
truncated) while ``direct.enabled`` is true, and withdraws it otherwise. Kept apart
from the rest of the package: the daemon imports only this (no subprocess, no JSON).
"""

from __future__ import annotations

from hvguest.direct.settings import DirectSettings

PUBLISH_KEY = "hvguest.direct"


def publish_value(settings: DirectSettings) -> str | None:
    """The value of PUBLISH_KEY, ``ssh vsock:<port>``; None: no key."""
    return f"ssh vsock:{settings.port}" if settings.enabled else None
