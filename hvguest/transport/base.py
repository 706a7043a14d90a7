"""The interface every daemon transport offers to the runtime's poll loop."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Transport(Protocol):
    """One message channel between a daemon and the kernel (or host).

    ``fileno()`` is polled by the runtime; ``read_packet()`` returns one whole
    message, or ``b""`` when nothing is ready; failures raise ``TransportError``.
    """

    def fileno(self) -> int: ...

    def read_packet(self) -> bytes: ...

    def write_packet(self, data: bytes) -> None: ...

    def close(self) -> None: ...
