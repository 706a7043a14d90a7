"""Fixture machine trees for the heartbeat, inventory and status tests."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator

import pytest

from hvguest import log as hvlog
from hvguest.paths import Paths

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "sysfs"))

import sysfs_builder  # noqa: E402


@pytest.fixture
def builder() -> object:
    return sysfs_builder


@pytest.fixture
def machine(tmp_path: str) -> Callable[..., Paths]:
    """machine(gen=2, kernel="6.1", omit=(), unbind=(), ...) -> Paths of a new tree."""
    count = iter(range(100))

    def make(**kwargs: object) -> Paths:
        return sysfs_builder.build(os.path.join(str(tmp_path), f"m{next(count)}"), **kwargs)

    return make


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    hvlog._buffer = None
