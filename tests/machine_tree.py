"""Fixture machine trees for the heartbeat, vmbus, timesync, shutdown, health and status
tests: their conftest.py files import these fixtures."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest
from logging_state import SERVICE_MANAGER_ENV, root_logging_restored, unset_env

from hvguest.paths import Paths

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures", "sysfs"))

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
    unset_env(monkeypatch, SERVICE_MANAGER_ENV)
    with root_logging_restored():
        yield
