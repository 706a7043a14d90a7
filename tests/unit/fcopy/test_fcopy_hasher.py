"""BackgroundHash: the same digest as hashlib, whatever the batching and threads."""

from __future__ import annotations

import hashlib
import os
import threading

from hvguest.fcopy.hasher import BATCH, BackgroundHash


def workers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "fcopy-hash"]


def test_digest_matches_hashlib_across_batches() -> None:
    data = os.urandom(3 * BATCH + 12345)
    h = BackgroundHash()
    for off in range(0, len(data), 6144):
        h.update(memoryview(data)[off : off + 6144])
    assert workers() == ["fcopy-hash"]  # full batches went to the worker
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert workers() == []
    h.update(b"more")  # hexdigest() does not end the hash
    assert h.hexdigest() == hashlib.sha256(data + b"more").hexdigest()


def test_small_input_starts_no_thread_and_close_stops_the_worker() -> None:
    h = BackgroundHash()
    h.update(b"abc")
    assert workers() == [] and h.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    h.update(bytes(BATCH))
    assert workers() == ["fcopy-hash"]
    h.close()
    assert workers() == []
