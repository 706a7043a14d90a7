"""The interface every message transport offers to the daemons' channel runner."""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable


@runtime_checkable
class Transport(Protocol):
    """One registered message channel between a daemon and the kernel (or host).

    ``open()`` opens and registers (``version`` is then the kernel's answer);
    ``fileno()`` is polled by the runtime; ``read_ready()`` reads the one message
    the poll loop reported (no second poll: on the device every poll is a round
    trip into the driver), ``b""`` when it was a spurious wake-up;
    ``read_packet(timeout)`` waits for one; failures raise ``TransportError``,
    after which the runner closes and re-opens.
    """

    path: str
    version: str | None

    @property
    def is_open(self) -> bool: ...

    def open(self) -> object: ...

    def fileno(self) -> int: ...

    def read_ready(self) -> bytes: ...

    def read_packet(self, timeout: float | None = 0.0) -> bytes: ...

    def write_packet(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class Opens:
    """``with transport:`` opens it (unless it is open already) and closes it."""

    @property
    def is_open(self) -> bool:
        raise NotImplementedError

    def open(self) -> object:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if not self.is_open:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
