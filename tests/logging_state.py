"""Undo what a test's setup_logging() did to process-wide logging state.

Importable from any test module: ``tests/`` is on sys.path through tests/conftest.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hvguest import log as hvlog

# What makes setup_logging() pick the journal or talk to a service manager.
SERVICE_MANAGER_ENV = ("JOURNAL_STREAM", "INVOCATION_ID", "NOTIFY_SOCKET")


def unset_env(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> None:
    for name in names:
        monkeypatch.delenv(name, raising=False)


@contextmanager
def root_logging_restored() -> Iterator[None]:
    """Root handlers added inside are removed again, the root level and hvguest.log's
    memory buffer are reset, so one test's logging set-up cannot leak into the next."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
        hvlog._buffer = None
