"""The one re-open back-off shared by the daemons."""

from __future__ import annotations

import pytest

from hvguest.backoff import Backoff


def test_doubles_from_a_tenth_of_a_second_to_thirty() -> None:
    b = Backoff()
    delays = [b.next_delay() for _ in range(12)]
    assert delays[:6] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    assert delays[-3:] == [30.0, 30.0, 30.0]
    assert all(a <= c for a, c in zip(delays, delays[1:], strict=False))


def test_a_healthy_exchange_starts_over() -> None:
    b = Backoff()
    for _ in range(20):
        b.next_delay()
    assert b.failures == 20
    b.healthy()
    assert b.next_delay() == 0.1


def test_a_minute_of_failures_costs_a_handful_of_reopens() -> None:
    b = Backoff()
    elapsed, reopens = 0.0, 0
    while elapsed < 60:
        elapsed += b.next_delay()
        reopens += 1
    assert reopens <= 10


def test_no_overflow_after_many_failures() -> None:
    b = Backoff()
    b.failures = 10_000
    assert b.next_delay() == 30.0


@pytest.mark.parametrize("initial,maximum", [(0, 1), (2, 1), (-1, 5)])
def test_bad_bounds(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum)
