"""DeviceThread: a worker that owns a blocking device; failures reach the loop."""

from __future__ import annotations

import threading

from hvguest.daemon import Runtime
from hvguest.daemons.worker_channel import DeviceThread
from hvguest.errors import TransportError


def test_bug_is_answered_and_serving_goes_on_then_transport_error_reaches_the_loop() -> None:
    runtime = Runtime("t")
    calls: list[str] = []
    failed: list[tuple[str, bool]] = []
    bugs: list[str] = []

    def serve_one() -> None:
        calls.append("serve")
        if len(calls) == 1:
            raise ValueError("a bug serving one message")
        if len(calls) == 2:
            return
        raise TransportError("/dev/x: read failed: Input/output error")

    def on_failed(exc: TransportError) -> None:
        failed.append((str(exc), threading.current_thread() is threading.main_thread()))

    worker = DeviceThread("t-device", runtime, serve_one, stopping=lambda: False,
                          failed=on_failed, on_bug=lambda: bugs.append("answered"))
    try:
        worker.start()
        worker.thread.join(timeout=10)
        assert not worker.thread.is_alive()  # a TransportError ends the worker
        for _ in range(50):
            if failed:
                break
            runtime.run_once(0.1)
        assert calls == ["serve"] * 3 and bugs == ["answered"]
        assert failed == [("/dev/x: read failed: Input/output error", True)]
    finally:
        runtime.close()


def test_stopping_ends_the_worker_without_a_failure() -> None:
    runtime = Runtime("t")
    stop = threading.Event()
    failed: list[TransportError] = []

    def serve_one() -> None:
        stop.set()
        raise TransportError("closed under the worker at stop")

    worker = DeviceThread("t-device", runtime, serve_one, stopping=stop.is_set,
                          failed=failed.append)
    try:
        worker.start()
        worker.thread.join(timeout=10)
        runtime.run_once(0.1)
        assert failed == []
    finally:
        runtime.close()
