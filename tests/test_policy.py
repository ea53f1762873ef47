"""BreakerPolicy: validation, JSON round trip, the error taxonomy and the open-duration backoff."""

from __future__ import annotations

import json
import random

import pytest

from poolwarden.errors import ConfigurationError
from poolwarden.policy import (
    BreakerLevel,
    BreakerPolicy,
    ErrorKind,
    FailureBurst,
    HalfOpenRule,
    OpenBackoff,
    SlidingWindow,
    counts,
)


def test_defaults_follow_the_seed() -> None:
    """The default policy trips on 5 consecutive failures, waits 30 s, and admits one trial."""
    policy = BreakerPolicy()
    assert policy.consecutive_failures == 5
    assert policy.backoff.base == 30.0
    assert policy.half_open.trials == 1
    assert not policy.uses_window


def test_full_policy_round_trips_through_json() -> None:
    """A policy written to JSON text and read back is equal to the original."""
    policy = BreakerPolicy(
        consecutive_failures=None,
        failure_rate=0.5,
        slow_call_rate=0.8,
        slow_call_seconds=2.5,
        window=SlidingWindow(kind="time", size=60, min_calls=10),
        failure_burst=FailureBurst(max_failures=20, within_seconds=10.0),
        backoff=OpenBackoff(base=5.0, multiplier=3.0, cap=120.0, jitter="none", decay_after=60.0),
        half_open=HalfOpenRule(trials=4, close_ratio=0.75, max_seconds=15.0),
        ignored_kinds=frozenset({ErrorKind.TIMEOUT}),
    )
    text = json.dumps(policy.to_dict())
    assert BreakerPolicy.from_dict(json.loads(text)) == policy


def test_missing_keys_take_defaults() -> None:
    """An empty JSON object is the default policy."""
    assert BreakerPolicy.from_dict({}) == BreakerPolicy()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"colour": "red"}, "unknown key"),
        ({"window": {"kind": "sideways"}}, "window kind"),
        ({"window": {"size": 10, "min_calls": 20}}, "min_calls"),
        ({"window": {"extra": 1}}, "policy.window has unknown key"),
        ({"backoff": {"base": 30, "cap": 10}}, "backoff.cap"),
        ({"backoff": {"base": float("nan")}}, "backoff.base"),
        ({"half_open": {"trials": 0}}, "half_open.trials"),
        ({"half_open": {"close_ratio": 0}}, "close_ratio"),
        ({"ignored_kinds": ["gremlins"]}, "not an error kind"),
        ({"consecutive_failures": None}, "at least one trip rule"),
        ({"failure_burst": {"max_failures": 0, "within_seconds": 1}}, "max_failures"),
        ({"window": [1, 2]}, "JSON object"),
    ],
)
def test_invalid_policies_raise_configuration_error(data: dict[str, object], fragment: str) -> None:
    """Each invalid setting is refused with a ConfigurationError that names it."""
    with pytest.raises(ConfigurationError, match=fragment):
        BreakerPolicy.from_dict(data)


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_counting_follows_the_taxonomy(kind: ErrorKind) -> None:
    """input and cancelled never count; validation counts for model and standalone breakers only."""
    never = kind in (ErrorKind.INPUT, ErrorKind.CANCELLED)
    assert counts(kind, BreakerLevel.MODEL) is (not never)
    assert counts(kind, BreakerLevel.STANDALONE) is (not never)
    assert counts(kind, BreakerLevel.CONNECTION) is (not never and kind is not ErrorKind.VALIDATION)


def test_ignored_kinds_stop_counting() -> None:
    """A kind the policy ignores does not count even where the taxonomy would count it."""
    policy = BreakerPolicy(ignored_kinds=frozenset({ErrorKind.TIMEOUT}))
    assert not policy.counts(ErrorKind.TIMEOUT, BreakerLevel.CONNECTION)
    assert policy.counts(ErrorKind.TRANSPORT, BreakerLevel.CONNECTION)


def test_first_open_lasts_the_base_and_reopens_grow_within_the_cap() -> None:
    """Streak 0 waits exactly base; later streaks draw between base and min(cap, base*m**n)."""
    backoff = OpenBackoff(base=30.0, multiplier=2.0, cap=200.0)
    rng = random.Random(7)
    assert backoff.duration(0, rng) == 30.0
    for streak, ceiling in ((1, 60.0), (2, 120.0), (3, 200.0), (40, 200.0)):
        draws = [backoff.duration(streak, rng) for _ in range(200)]
        assert all(30.0 <= d <= ceiling for d in draws)
        assert max(draws) - min(draws) > (ceiling - 30.0) / 2  # the jitter really spreads


def test_jitter_is_deterministic_for_a_seeded_source() -> None:
    """Two sources with the same seed draw the same waits."""
    backoff = OpenBackoff()
    first = [backoff.duration(3, random.Random(1)) for _ in range(3)]
    second = [backoff.duration(3, random.Random(1)) for _ in range(3)]
    assert first == second


def test_no_jitter_uses_the_ceiling() -> None:
    """With jitter 'none' the wait is the exponential ceiling itself."""
    backoff = OpenBackoff(base=10.0, multiplier=2.0, cap=1000.0, jitter="none")
    assert [backoff.duration(n, random.Random()) for n in range(4)] == [10.0, 20.0, 40.0, 80.0]


def test_successes_to_close_rounds_up() -> None:
    """A 0.5 ratio over 3 trials needs 2 successes; the default needs its single trial."""
    assert HalfOpenRule(trials=3, close_ratio=0.5).successes_to_close == 2
    assert HalfOpenRule().successes_to_close == 1
