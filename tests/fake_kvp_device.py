"""A KVP device that opens and never delivers a request: for tests of what
hvguest-kvpd does around its requests (start, events, publishing)."""

from __future__ import annotations

import os


class IdleKvpDevice:
    path = "/dev/vmbus/hv_kvp"
    version = "3.1"

    def __init__(self) -> None:
        self.is_open = False
        self._r, self._w = os.pipe()

    def open(self) -> IdleKvpDevice:
        self.is_open = True
        return self

    def fileno(self) -> int:
        return self._r

    def read_ready(self) -> bytes:
        return b""

    def write_packet(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            os.close(self._r)
            os.close(self._w)
