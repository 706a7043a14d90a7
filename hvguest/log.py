"""Logging set-up shared by the daemons.

Under systemd records go to the journal with SYSLOG_IDENTIFIER=<ident>; fields
passed as ``extra={"HVGUEST_POOL": 1}`` become journal fields. Otherwise they go
to stderr.

While the VSS daemon holds filesystems frozen, writing a log record could block
(journald's files may live on a frozen filesystem), so records can be held in
memory with ``hold()`` and emitted after thaw with ``flush()``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from hvguest.text import printable

TARGETS = ("auto", "journal", "stderr")
HOLD_LIMIT = 10_000

_STDERR_FORMAT = "%(asctime)s %(ident)s[%(process)d] %(levelname)s %(name)s: %(message)s"


def under_systemd() -> bool:
    """True when our stdout/stderr belong to a systemd service."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


class MemoryLogBuffer(logging.Handler):
    """Passes records to ``target``, or keeps them in memory while held.

    At most ``limit`` records are kept; older ones are dropped and counted, and
    the count is reported when the buffer is flushed.
    """

    def __init__(self, target: logging.Handler, limit: int = HOLD_LIMIT) -> None:
        super().__init__(logging.NOTSET)
        self.target = target
        self.limit = limit
        self._held = False
        self._records: deque[logging.LogRecord] = deque()
        self._dropped = 0
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._held

    def hold(self) -> None:
        with self._mutex:
            self._held = True

    # Not named release(): logging.Handler.release() is the handler's lock.
    def flush_held(self) -> None:
        """Stop holding and emit everything held so far."""
        with self._mutex:
            self._held = False
            records = list(self._records)
            self._records.clear()
            dropped, self._dropped = self._dropped, 0
        if dropped:
            note = logging.LogRecord(
                "hvguest.log",
                logging.WARNING,
                __file__,
                0,
                "%d log records dropped while logging was held",
                (dropped,),
                None,
            )
            records.insert(0, note)
        for record in records:
            self.target.handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        with self._mutex:
            if self._held:
                if len(self._records) >= self.limit:
                    self._records.popleft()
                    self._dropped += 1
                self._records.append(record)
                return
        self.target.handle(record)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802
        self.target.setFormatter(fmt)

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        self.flush_held()
        self.target.close()
        super().close()


class EscapingFormatter(logging.Formatter):
    """The stderr format with the message escaped (``hvguest.text.printable``).

    Messages carry host- and user-supplied strings (KVP keys, file names, hook output);
    on a terminal or in a plain log file a newline would forge a record and an escape
    sequence would reach the reader's terminal. A traceback keeps its line structure,
    each of its lines escaped.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        saved = record.message
        record.message = printable(saved)
        try:
            return super().formatMessage(record)
        finally:
            record.message = saved

    def formatException(self, ei: Any) -> str:  # noqa: N802
        text = super().formatException(ei)
        return "\n".join(printable(line) for line in text.splitlines())

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return "\n".join(printable(line) for line in stack_info.splitlines())


class _IdentFilter(logging.Filter):
    def __init__(self, ident: str) -> None:
        super().__init__()
        self.ident = ident

    def filter(self, record: logging.LogRecord) -> bool:
        record.ident = self.ident
        return True


_buffer: MemoryLogBuffer | None = None


def _journal_handler(ident: str) -> logging.Handler:
    from hvguest.journal import JournalHandler  # only under systemd

    return JournalHandler(SYSLOG_IDENTIFIER=ident)


def setup_logging(
    ident: str, *, debug: bool = False, target: str = "auto", level: str | int | None = None
) -> MemoryLogBuffer:
    """Route the root logger to the journal or stderr; returns the handler.

    ``level`` (name or number) applies unless ``debug`` forces DEBUG.
    """
    global _buffer
    if target not in TARGETS:
        raise ValueError(f"log target {target!r}: expected one of {', '.join(TARGETS)}")
    use_journal = target == "journal" or (target == "auto" and under_systemd())
    inner: logging.Handler
    if use_journal:
        inner = _journal_handler(ident)
    else:
        inner = logging.StreamHandler(sys.stderr)
    if not use_journal:
        inner.setFormatter(EscapingFormatter(_STDERR_FORMAT))
        inner.addFilter(_IdentFilter(ident))
    root = logging.getLogger()
    if _buffer is not None:
        root.removeHandler(_buffer)
        _buffer.flush_held()
    _buffer = MemoryLogBuffer(inner)
    root.addHandler(_buffer)
    set_level(logging.DEBUG if debug else (level if level is not None else logging.INFO))
    return _buffer


def set_level(level: str | int) -> None:
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            raise ValueError(f"unknown log level {level!r}")
    logging.getLogger().setLevel(level)


def hold() -> None:
    """Keep log records in memory until ``flush()`` (no-op before set-up)."""
    if _buffer is not None:
        _buffer.hold()


def flush() -> None:
    """Stop holding and emit the held records."""
    if _buffer is not None:
        _buffer.flush_held()


release = flush


class Throttle:
    """Once-per-period gate for a repeating failure.

    ``should_log(key)`` is True the first time and then once per ``period``
    seconds; it also returns how many calls were suppressed since the last True.
    """

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.clock = clock
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}

    def should_log(self, key: object = None) -> tuple[bool, int]:
        now = self.clock()
        last = self._last.get(key)
        if last is None or now - last >= self.period:
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        return False, 0

    def reset(self, key: object = None) -> int:
        """Forget ``key`` (the failure cleared); returns the suppressed count."""
        self._last.pop(key, None)
        return self._suppressed.pop(key, 0)
