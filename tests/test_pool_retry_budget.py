"""The pool's retry budget: retries as a share of the requests of a sliding window."""

from __future__ import annotations

from poolwarden.pool.retry_budget import TRIM_FLOOR, RetryBudget


def test_retries_are_a_share_of_the_window_requests() -> None:
    """At most ``minimum`` plus ``ratio`` of the window's requests may be retried; older requests
    do not count."""
    budget = RetryBudget(window=10.0)
    for i in range(100):
        budget.note_request(float(i) / 10)  # 100 requests within 10 s
    assert sum(budget.try_spend(9.9, 0.1, 2) for _ in range(20)) == 12
    assert not budget.try_spend(25.0, 0.0, 0)  # the requests have left the window
    assert budget.try_spend(25.0, 0.0, 1)


def test_noted_requests_stay_bounded_by_twice_a_window() -> None:
    """A busy pool's noted requests are trimmed when they have doubled, not on every request:
    never more than twice a window's worth (or the floor)."""
    budget = RetryBudget(window=1.0)
    rate = 5000  # requests a second, so a window holds more than the floor
    largest = 0
    for i in range(rate * 10):
        budget.note_request(i / rate)
        largest = max(largest, len(budget.requests))
    assert largest <= 2 * (rate + 1) + 1
    assert len(budget.requests) > TRIM_FLOOR
    assert budget.try_spend(10.0, 0.0, 1)
    assert len(budget.requests) <= rate + 1  # spending trims to the window
