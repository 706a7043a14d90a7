"""setup_logging targets, holding records in memory, Throttle."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest
from logging_state import root_logging_restored

from hvguest import log as hvlog
from hvguest.log import MemoryLogBuffer, Throttle, setup_logging


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    with root_logging_restored():
        yield


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_throttle_once_per_period_with_suppressed_count() -> None:
    now = [0.0]
    t = Throttle(60, clock=lambda: now[0])
    assert t.should_log("hb") == (True, 0)
    assert t.should_log("hb") == (False, 0)
    assert t.should_log("hb") == (False, 0)
    assert t.should_log("other") == (True, 0)
    now[0] = 59.9
    assert t.should_log("hb") == (False, 0)
    now[0] = 60.0
    assert t.should_log("hb") == (True, 3)
    assert t.should_log("hb") == (False, 0)
    assert t.reset("hb") == 1
    assert t.should_log("hb") == (True, 0)


def test_memory_buffer_holds_and_flushes_in_order() -> None:
    target = ListHandler()
    buf = MemoryLogBuffer(target, limit=3)
    logger = logging.getLogger("hvguest.test.hold")
    logger.propagate = False
    logger.addHandler(buf)
    logger.setLevel(logging.INFO)
    try:
        logger.info("before")
        buf.hold()
        for i in range(5):
            logger.info("frozen %d", i)
        assert [r.getMessage() for r in target.records] == ["before"]
        buf.flush_held()
        msgs = [r.getMessage() for r in target.records]
        assert msgs == [
            "before",
            "2 log records dropped while logging was held",
            "frozen 2",
            "frozen 3",
            "frozen 4",
        ]
        logger.info("after")
        assert target.records[-1].getMessage() == "after"
    finally:
        logger.removeHandler(buf)


def test_setup_logging_stderr_and_module_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    buf = setup_logging("hvguest-testd")
    assert isinstance(buf.target, logging.StreamHandler)
    logger = logging.getLogger("hvguest.test.setup")
    logger.debug("hidden")
    logger.info("shown %s", "here")
    hvlog.hold()
    logger.warning("held")
    assert "held" not in stream.getvalue()
    hvlog.flush()
    text = stream.getvalue()
    assert "hvguest-testd[" in text and "shown here" in text and "held" in text
    assert "hidden" not in text


def test_setup_logging_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    setup_logging("x", debug=True, target="stderr", level="error")
    assert logging.getLogger().level == logging.DEBUG
    setup_logging("x", target="stderr", level="warning")
    assert logging.getLogger().level == logging.WARNING


def test_journal_chosen_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOCATION_ID", "0123")
    made: list[str] = []

    def fake_journal(ident: str) -> logging.Handler:
        made.append(ident)
        return ListHandler()

    monkeypatch.setattr(hvlog, "_journal_handler", fake_journal)
    buf = setup_logging("hvguest-kvpd")
    assert made == ["hvguest-kvpd"]
    logging.getLogger("hvguest.test").info("pool", extra={"HVGUEST_POOL": 1})
    rec = buf.target.records[-1]  # type: ignore[attr-defined]
    assert rec.HVGUEST_POOL == 1


def test_real_journal_handler_carries_identifier() -> None:
    handler = hvlog._journal_handler("hvguest-kvpd")
    assert type(handler).__name__ == "JournalHandler"
    assert handler._extra["SYSLOG_IDENTIFIER"] == "hvguest-kvpd"  # type: ignore[attr-defined]


def test_bad_target() -> None:
    with pytest.raises(ValueError, match="log target"):
        setup_logging("x", target="syslog")


def test_journal_logging_loads_no_libsystemd() -> None:
    # The handler speaks journald's protocol itself: python-systemd and libsystemd
    # (1.2 MB of every daemon's memory) stay out.
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "logging.raiseExceptions = False\n"
        "from hvguest.log import setup_logging\n"
        "setup_logging('hvguest-kvpd', target='journal')\n"
        "logging.getLogger('x').warning('hello')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'systemd'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_journal_field_names_are_checked() -> None:
    from hvguest.journal import JournalHandler

    with pytest.raises(ValueError, match="invalid journal field name"):
        JournalHandler(syslog_identifier="x")


def test_journal_unreachable_is_a_logging_error_not_an_exception(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hvguest.journal import JournalHandler

    handler = JournalHandler(os.path.join(str(tmp_path), "absent"), SYSLOG_IDENTIFIER="x")
    failed: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", failed.append)
    record = logging.LogRecord("x", logging.INFO, "f", 1, "m", (), None)
    handler.handle(record)
    handler.close()
    assert failed == [record]
