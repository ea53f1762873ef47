"""The policy options that express pybreaker's, resilience4j's and Polly's semantics, on a FakeClock."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from poolwarden.breaker import BreakerState, CircuitBreaker
from poolwarden.breaker_events import BreakerOpened, from_recorded
from poolwarden.clock import FakeClock
from poolwarden.errors import ConfigurationError
from poolwarden.events import RecordedEvent
from poolwarden.policy import (
    BreakerPolicy,
    FailureBurst,
    HalfOpenRule,
    OpenBackoff,
    SlidingWindow,
)
from tests.test_breaker import T0, Row, Step, fail, ok, run, tick

FIXED = OpenBackoff.fixed(30.0)


def trials(rule: HalfOpenRule, **more: object) -> BreakerPolicy:
    """Trip on 2 consecutive failures, wait a fixed 30 s, then test the water by ``rule``."""
    return BreakerPolicy(consecutive_failures=2, backoff=FIXED, half_open=rule, **more)  # type: ignore[arg-type]


TO_HALF = [*fail(2), *tick(30)]
EARLY = HalfOpenRule(trials=3, successes=2)
ROUND = HalfOpenRule(trials=3, successes=2, verdict="round")
SLOWLY = BreakerPolicy(
    slow_call_rate=0.5,
    failure_burst=FailureBurst(2, within_seconds=60.0),
    slow_call_seconds=1.0,
    window=SlidingWindow(size=4, min_calls=2),
    backoff=FIXED,
)
RATE_EVERY = BreakerPolicy(failure_rate=0.5, window=SlidingWindow(size=10, min_calls=4), backoff=FIXED)
RATE_AFTER_FAILURE = BreakerPolicy(
    failure_rate=0.5, window=SlidingWindow(size=10, min_calls=4), backoff=FIXED, judge_rates="after_failure"
)

ROWS = [
    Row("early verdict closes at the last success needed", [*TO_HALF, *ok(2)], BreakerState.CLOSED,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerClosed"], trials(EARLY)),
    Row("round verdict waits for every trial before closing", [*TO_HALF, *ok(2)], BreakerState.HALF_OPEN,
        ["BreakerOpened", "BreakerHalfOpened"], trials(ROUND)),
    Row("round verdict closes when the last trial reports", [*TO_HALF, *ok(2), *fail(1)], BreakerState.CLOSED,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerClosed"], trials(ROUND)),
    Row("early verdict re-opens once closing is out of reach", [*TO_HALF, *fail(2)], BreakerState.OPEN,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerOpened"], trials(EARLY)),
    Row("round verdict re-opens only after every trial", [*TO_HALF, *fail(2)], BreakerState.HALF_OPEN,
        ["BreakerOpened", "BreakerHalfOpened"], trials(ROUND)),
    Row("a success count of all trials re-opens on the first failure (pybreaker)",
        [*TO_HALF, *ok(1), *fail(1)], BreakerState.OPEN,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerOpened"], trials(HalfOpenRule(trials=3, successes=3))),
    Row("with a slow-call rule a slow trial counts against the round",
        [*fail(2), *tick(30), *ok(1, 2.0)], BreakerState.OPEN,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerOpened"], SLOWLY),
    Row("with a slow-call rule a fast trial still closes",
        [*fail(2), *tick(30), *ok(1, 0.5)], BreakerState.CLOSED,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerClosed"], SLOWLY),
    Row("without a slow-call rule a slow trial is a success",
        [*TO_HALF, *ok(1, 99.0)], BreakerState.CLOSED,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerClosed"], trials(HalfOpenRule())),
    Row("a call exactly at the slow threshold is not slow (the peers' '>')",
        [*ok(4, 1.0)], BreakerState.CLOSED, [], SLOWLY),
    Row("a call just over the slow threshold is slow",
        [*ok(4, 1.001)], BreakerState.OPEN, ["BreakerOpened"], SLOWLY),
    Row("every_call: a success that reaches min_calls can trip (resilience4j)",
        [*fail(2), *ok(2)], BreakerState.OPEN, ["BreakerOpened"], RATE_EVERY),
    Row("after_failure: a success never trips on a rate (Polly)",
        [*fail(2), *ok(2)], BreakerState.CLOSED, [], RATE_AFTER_FAILURE),
    Row("after_failure: the next failure judges the rate",
        [*fail(2), *ok(2), *fail(1)], BreakerState.OPEN, ["BreakerOpened"], RATE_AFTER_FAILURE),
    Row("a fixed wait does not grow on re-open",
        [*TO_HALF, *fail(1), *tick(30)], BreakerState.HALF_OPEN,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerOpened", "BreakerHalfOpened"], trials(HalfOpenRule())),
    Row("max_seconds=None: a lost trial holds the round",
        [*TO_HALF, ("hold",), *tick(100_000)], BreakerState.HALF_OPEN,
        ["BreakerOpened", "BreakerHalfOpened"], trials(HalfOpenRule(max_seconds=None))),
    Row("max_seconds set: a lost trial ends the round",
        [*TO_HALF, ("hold",), *tick(61)], BreakerState.OPEN,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerOpened"], trials(HalfOpenRule(max_seconds=60.0))),
]  # fmt: skip


def drive(breaker: CircuitBreaker, clock: FakeClock, steps: list[Step]) -> None:
    """``run``, plus ``("hold",)``: a call admitted whose result never comes back."""
    for step in steps:
        if step[0] == "hold":
            assert breaker.allow()
        else:
            run(breaker, clock, [step])


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_transition_table(row: Row) -> None:
    """Each option's row ends in the state and with the transitions the docs promise."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("k", row.policy, clock=clock, rng=random.Random(0))
    drive(breaker, clock, row.steps)
    breaker.poll()
    assert breaker.state is row.state
    types = [type(e).__name__ for e in breaker.drain_events() if "Call" not in type(e).__name__]
    assert [t for t in types if t != "BreakerTrialAdmitted"] == row.transitions


def test_a_lost_trial_without_max_seconds_is_rejected_without_a_retry_time() -> None:
    """With max_seconds=None nobody knows when the round ends: the rejection says so."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("k", trials(HalfOpenRule(max_seconds=None)), clock=clock, rng=random.Random(0))
    drive(breaker, clock, [*TO_HALF, ("hold",)])
    refused = breaker.allow()
    assert not refused
    assert refused.retry_at is None


@pytest.mark.parametrize("state", ["closed", "half_open", "open", "force_open", "disable", "metrics_only"])
def test_trip_opens_from_any_state_for_the_timed_wait(state: str) -> None:
    """trip(who, why) opens now for the normal wait, audited; then the breaker half-opens as usual."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("k", trials(HalfOpenRule()), clock=clock, rng=random.Random(0))
    if state in ("half_open", "open"):
        drive(breaker, clock, fail(2))
        if state == "half_open":
            clock.advance(30)
            breaker.poll()
    elif state != "closed":
        getattr(breaker, state)("ops", "setup")
    breaker.drain_events()
    breaker.trip("alice", "deploying the gateway")
    (opened,) = [e for e in breaker.drain_events() if isinstance(e, BreakerOpened)]
    assert (opened.reason, opened.who, opened.why) == ("manual", "alice", "deploying the gateway")
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_at == clock() + 30.0
    clock.advance(30)
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN


def test_trip_needs_who_and_why() -> None:
    """A manual trip without a person or a reason is refused, as every override is."""
    breaker = CircuitBreaker("k", clock=FakeClock(T0), rng=random.Random(0))
    with pytest.raises(ConfigurationError, match="who"):
        breaker.trip(" ", "because")
    assert breaker.state is BreakerState.CLOSED


def test_a_version_1_opened_event_is_upcast_with_no_person_and_no_draw() -> None:
    """BreakerOpened written before schema version 2 reads back as an automatic open."""
    record = RecordedEvent(
        position=1,
        stream="breaker/k",
        version=1,
        type="BreakerOpened",
        occurred_at=T0,
        recorded_at=T0,
        payload_json=json.dumps(
            {"from_state": "closed", "reason": "consecutive_failures", "retry_at": T0 + 30, "streak": 0}
        ),
        schema_version=1,
        to_state="open",
    )
    event = from_recorded(record)
    assert isinstance(event, BreakerOpened)
    assert (event.who, event.why, event.draw, event.retry_at) == (None, None, None, T0 + 30)
    breaker = CircuitBreaker("k", clock=FakeClock(T0), rng=random.Random(0))
    breaker.apply_recorded(record)
    assert breaker.state is BreakerState.OPEN


def test_the_jitter_draw_is_recorded_beside_retry_at() -> None:
    """A jittered re-open records its draw, and the wait is the backoff's for that draw."""
    clock = FakeClock(T0)
    policy = BreakerPolicy(consecutive_failures=1, backoff=OpenBackoff(base=10.0, cap=100.0))
    breaker = CircuitBreaker("k", policy, clock=clock, rng=random.Random(3))
    drive(breaker, clock, [*fail(1), *tick(10), *fail(1)])
    first, second = [e for e in breaker.drain_events() if isinstance(e, BreakerOpened)]
    assert first.draw is None  # streak 0 waits exactly base: nothing to draw
    assert second.draw is not None
    assert second.retry_at == second.at + policy.backoff.wait(second.streak, second.draw)


def test_fixed_backoff_is_one_argument() -> None:
    """OpenBackoff.fixed(30) always waits 30 s and never draws."""
    backoff = OpenBackoff.fixed(30)
    assert [backoff.wait(n, backoff.draw(n, random.Random())) for n in range(5)] == [30.0] * 5


def test_a_policy_has_the_rules_it_names() -> None:
    """Naming a rate rule turns the default consecutive-failure rule off; naming none keeps it."""
    assert BreakerPolicy().rules == ("consecutive_failures=5",)
    rate = BreakerPolicy(failure_rate=0.5)
    assert rate.consecutive_failures is None
    assert rate.rules == ("failure_rate=0.5",)
    assert "trips on: failure_rate=0.5>" in repr(rate)
    assert BreakerPolicy.from_dict({"failure_rate": 0.5}) == rate
    both = BreakerPolicy(consecutive_failures=5, failure_rate=0.5)
    assert both.rules == ("consecutive_failures=5", "failure_rate=0.5")
    assert BreakerPolicy.from_dict(both.to_dict()) == both


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"failure_rate": "0.5"},
            "failure_rate must be a number (or null to turn it off), not the text '0.5'",
        ),
        ({"consecutive_failures": 2.5}, "consecutive_failures must be a whole number"),
        ({"consecutive_failures": True}, "not true (a boolean)"),
        ({"window": {"size": "10"}}, "window size must be a whole number, not the text '10'"),
        ({"backoff": {"base": "30s"}}, "backoff.base must be a number, not the text '30s'"),
        ({"half_open": {"verdict": "late"}}, "half_open.verdict must be 'early' or 'round'"),
        ({"half_open": {"trials": 2, "successes": 3}}, "between 1 and half_open.trials"),
        ({"half_open": {"successes": 1, "close_ratio": 0.5}}, "not both"),
        ({"half_open": {"max_seconds": 0}}, "or null: no limit"),
        ({"judge_rates": "sometimes"}, "judge_rates must be 'every_call' or 'after_failure'"),
        ({"ignored_kinds": "timeout"}, "ignored_kinds must be a list"),
    ],
)
def test_bad_values_are_refused_in_the_files_terms(data: dict[str, object], message: str) -> None:
    """A wrong type or value names the setting and the value, never a Python comparison error."""
    with pytest.raises(ConfigurationError) as refused:
        BreakerPolicy.from_dict(data)
    assert message in str(refused.value)


def test_a_policy_file_is_json_or_toml(tmp_path: Path) -> None:
    """The same policy reads from JSON and from TOML (where false turns a setting off)."""
    expected = BreakerPolicy(
        failure_rate=0.5,
        window=SlidingWindow(size=100, min_calls=100),
        backoff=OpenBackoff.fixed(60.0),
        half_open=HalfOpenRule(trials=10, close_ratio=0.5, verdict="round"),
    )
    as_json = tmp_path / "policy.json"
    as_json.write_text(json.dumps(expected.to_dict()), encoding="utf-8")
    as_toml = tmp_path / "policy.toml"
    as_toml.write_text(
        "consecutive_failures = false\nfailure_rate = 0.5\n"
        "[window]\nsize = 100\nmin_calls = 100\n"
        "[backoff]\nbase = 60.0\nmultiplier = 1.0\ncap = 60.0\njitter = 'none'\n"
        "[half_open]\ntrials = 10\nclose_ratio = 0.5\nverdict = 'round'\n",
        encoding="utf-8",
    )
    assert BreakerPolicy.from_file(as_json) == expected
    assert BreakerPolicy.from_file(as_toml) == expected
    broken = tmp_path / "broken.toml"
    broken.write_text("failure_rate = ", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        BreakerPolicy.from_file(broken)
    with pytest.raises(ConfigurationError, match="cannot read policy file"):
        BreakerPolicy.from_file(tmp_path / "missing.json")


EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "policies"


def test_the_pybreaker_example_behaves_as_pybreaker() -> None:
    """5 failures open for a fixed 60 s; one trial; its failure re-opens for 60 s again."""
    policy = BreakerPolicy.from_file(EXAMPLES / "pybreaker.toml")
    clock = FakeClock(T0)
    breaker = CircuitBreaker("k", policy, clock=clock, rng=random.Random(0))
    drive(breaker, clock, [*fail(4), *ok(1), *fail(4)])
    assert breaker.state is BreakerState.CLOSED
    drive(breaker, clock, [*fail(1), *tick(60), *fail(1)])
    assert (breaker.state, breaker.retry_at) == (BreakerState.OPEN, clock() + 60.0)


def test_the_resilience4j_example_behaves_as_resilience4j() -> None:
    """Judged from the 100th call at 50%; 10 trials judged together, 6 successes close."""
    policy = BreakerPolicy.from_file(EXAMPLES / "resilience4j.toml")
    clock = FakeClock(T0)
    breaker = CircuitBreaker("k", policy, clock=clock, rng=random.Random(0))
    drive(breaker, clock, [*fail(50), *ok(49)])
    assert breaker.state is BreakerState.CLOSED
    drive(breaker, clock, ok(1))  # the 100th call is a success, and the rate is judged after it
    assert breaker.state is BreakerState.OPEN
    drive(breaker, clock, [*tick(60), *ok(6), *fail(3)])
    assert breaker.state is BreakerState.HALF_OPEN  # the round is not over
    drive(breaker, clock, fail(1))
    assert breaker.state is BreakerState.CLOSED


def test_the_polly_example_behaves_as_polly() -> None:
    """Over 30 s and at least 100 calls, 10% failures trip, judged on a failure; a 5 s break."""
    policy = BreakerPolicy.from_file(EXAMPLES / "polly.toml")
    clock = FakeClock(T0)
    breaker = CircuitBreaker("k", policy, clock=clock, rng=random.Random(0))
    drive(breaker, clock, [*fail(10), *ok(90)])
    assert breaker.state is BreakerState.CLOSED  # 10% of 100, but no failure since
    drive(breaker, clock, fail(1))
    assert (breaker.state, breaker.retry_at) == (BreakerState.OPEN, clock() + 5.0)


def test_a_manual_trip_decided_without_seeing_the_log_still_applies() -> None:
    """Shared breakers: like an override, a manual trip marked decided_on is never superseded,
    while an automatic open decided without seeing a force_open is."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("k", clock=clock, rng=random.Random(0))
    breaker.force_open("bob", "maintenance")
    common = {"key": "k", "at": T0, "from_state": "closed", "retry_at": T0 + 30, "streak": 0, "decided_on": 1}
    assert not breaker.apply(BreakerOpened(reason="consecutive_failures", **common))  # type: ignore[arg-type]
    assert breaker.state is BreakerState.FORCED_OPEN
    assert breaker.apply(BreakerOpened(reason="manual", who="alice", why="failover", **common))  # type: ignore[arg-type]
    assert (breaker.state, breaker.retry_at) == (BreakerState.OPEN, T0 + 30)
