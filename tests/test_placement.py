"""Placement: a model type's browser preference, refined by what requests have shown."""

from __future__ import annotations

import pytest

from poolwarden.pool.placement import StatsBook, browser_rank, preference


def test_preference_follows_the_seeds_defaults() -> None:
    """Audio prefers Firefox, vision Chromium, text Edge then Chromium; unknown types Chromium."""
    assert preference("audio")[0] == "firefox"
    assert preference("vision")[0] == "chromium"
    assert preference("text")[:2] == ("edge", "chromium")
    assert preference("something-new")[0] == "chromium"


def test_rank_is_the_preference_place_without_evidence() -> None:
    """With no (or too few) recorded requests, a browser ranks by its place in the preference."""
    stats = StatsBook()
    for _ in range(5):
        stats.record("vision", "firefox", False, None)  # 5 failures: not yet evidence
    assert browser_rank("vision", "chromium", stats) == (0.0, 0.0)
    assert browser_rank("vision", "firefox", stats) == (1.0, 0.0)
    assert browser_rank("vision", "netscape", stats) == (3.0, 0.0)  # unknown: after every known one


def test_a_clearly_failing_browser_drops_behind_a_less_preferred_one() -> None:
    """30 % failures over 20+ requests cost three places, so the next browser ranks first."""
    stats = StatsBook()
    for n in range(40):
        stats.record("vision", "chromium", n % 10 >= 3, 12.0)  # 70 % success
        stats.record("vision", "firefox", True, 30.0)
    chromium = browser_rank("vision", "chromium", stats)
    firefox = browser_rank("vision", "firefox", stats)
    assert chromium[0] == pytest.approx(3.0)
    assert firefox == (1.0, 30.0)
    assert firefox < chromium


def test_mean_latency_counts_successes_only() -> None:
    """The latency figure is the mean of successful requests; failures carry none."""
    stats = StatsBook()
    for n in range(20):
        stats.record("text", "chromium", True, 10.0 if n % 2 else 20.0)
    stats.record("text", "chromium", False, None)
    figures = stats.get("text", "chromium")
    assert figures is not None
    assert figures.mean_latency_ms == 15.0
    assert figures.requests == 21
