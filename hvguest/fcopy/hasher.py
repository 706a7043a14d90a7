"""The per-file sha256, computed beside the transfer instead of in its way.

The host sends the next fragment only after our reply to the last one, so every
microsecond spent between reading a fragment and answering it is a microsecond of
throughput lost. Hashing a 6 KiB fragment costs about as much as everything else the
daemon does for it. ``BackgroundHash`` therefore only copies each fragment into a
batch (one memcpy) and hands full batches to a worker thread, which hashes them
while the daemon answers the next fragments: hashlib releases the GIL on buffers of
more than 2 KiB, so the two overlap on a second CPU. The data is not read back from
the file: a transfer's checksum costs no second pass over it, at COMPLETE or before.

One worker per transfer, started with the first full batch (a small file never
starts one) and stopped by ``hexdigest()`` or ``close()``; at most ``_QUEUED``
batches wait for it, so a starved worker slows the transfer down instead of
buffering it all in memory.
"""

from __future__ import annotations

import hashlib
import queue
import threading

BATCH = 256 << 10
_QUEUED = 8


class BackgroundHash:
    """sha256 of the bytes passed to ``update()``, in order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._batch = bytearray()
        self._queue: queue.Queue[bytearray | None] | None = None
        self._worker: threading.Thread | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        batch = self._batch
        batch += data
        if len(batch) >= BATCH:
            self._submit(batch)
            self._batch = bytearray()

    def hexdigest(self) -> str:
        """The digest of everything so far (waits for the worker); updating may go on."""
        self._stop()
        if self._batch:
            self._hash.update(self._batch)
            self._batch = bytearray()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Drop what is pending; the worker is gone when this returns."""
        self._batch = bytearray()
        self._stop()

    def _submit(self, batch: bytearray) -> None:
        if self._worker is None:
            self._queue = queue.Queue(_QUEUED)
            self._worker = threading.Thread(
                target=self._run, args=(self._queue,), name="fcopy-hash", daemon=True
            )
            self._worker.start()
        assert self._queue is not None
        self._queue.put(batch)

    def _run(self, batches: queue.Queue[bytearray | None]) -> None:
        update = self._hash.update
        while (batch := batches.get()) is not None:
            update(batch)

    def _stop(self) -> None:
        if self._worker is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._worker.join()
            self._worker = self._queue = None
