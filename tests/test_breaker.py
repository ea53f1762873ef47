"""The pure CircuitBreaker: every transition in a table, driven by a FakeClock, plus its contracts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from poolwarden.breaker import BreakerState, CircuitBreaker
from poolwarden.breaker_events import (
    BreakerClosed,
    BreakerEvent,
    BreakerOpened,
    BreakerOverridden,
    CallFailed,
    CallsSummarised,
)
from poolwarden.clock import FakeClock
from poolwarden.errors import ConfigurationError, InvalidTransition
from poolwarden.policy import (
    BreakerLevel,
    BreakerPolicy,
    ErrorKind,
    FailureBurst,
    HalfOpenRule,
    OpenBackoff,
    SlidingWindow,
)
from tests._breaker_support import CountingSource

T0 = 1_000.0
NO_JITTER = OpenBackoff(jitter="none")

Step = tuple[object, ...]


def fail(n: int = 1, kind: ErrorKind = ErrorKind.TRANSPORT, duration: float | None = None) -> list[Step]:
    """``n`` admitted calls that fail."""
    return [("fail", kind, duration)] * n


def ok(n: int = 1, duration: float | None = None) -> list[Step]:
    """``n`` admitted calls that succeed."""
    return [("ok", duration)] * n


def tick(seconds: float) -> list[Step]:
    """Let time pass."""
    return [("tick", seconds)]


def act(action: str) -> list[Step]:
    """A manual override."""
    return [("act", action)]


def run(breaker: CircuitBreaker, clock: FakeClock, steps: list[Step]) -> None:
    """Drive ``breaker`` through ``steps``; calls go through allow() and hand their permit back."""
    for step in steps:
        if step[0] == "tick":
            clock.advance(float(step[1]))  # type: ignore[arg-type]
        elif step[0] == "act":
            getattr(breaker, str(step[1]))("ops@example", "table test")
        else:
            decision = breaker.allow()
            if not decision:
                continue
            if step[0] == "ok":
                breaker.record_success(decision.permit, step[1])  # type: ignore[arg-type]
            else:
                breaker.record_failure(step[1], step[2], decision.permit)  # type: ignore[arg-type]


@dataclass
class Row:
    """One transition: a policy, a path of steps, and the state and transition events it must end with."""

    name: str
    steps: list[Step]
    state: BreakerState
    transitions: list[str]
    policy: BreakerPolicy = field(default_factory=lambda: BreakerPolicy(backoff=NO_JITTER))


TO_OPEN = [*fail(5)]
TO_HALF = [*TO_OPEN, *tick(30)]
RATE = BreakerPolicy(
    consecutive_failures=None, failure_rate=0.5, window=SlidingWindow(size=10, min_calls=4), backoff=NO_JITTER
)
TIME_RATE = BreakerPolicy(
    consecutive_failures=None,
    failure_rate=0.7,
    window=SlidingWindow(kind="time", size=10, min_calls=4),
    backoff=NO_JITTER,
)
BURST = BreakerPolicy(
    consecutive_failures=None, failure_burst=FailureBurst(3, within_seconds=10.0), backoff=NO_JITTER
)
TRANSITION_TYPES = {
    "BreakerOpened",
    "BreakerHalfOpened",
    "BreakerClosed",
    "BreakerOverridden",
    "BreakerWouldHaveOpened",
}

ROWS = [
    Row("closed stays closed below the limit", [*fail(4), *ok(), *fail(4)], BreakerState.CLOSED, []),
    Row("closed -> open on consecutive failures", TO_OPEN, BreakerState.OPEN, ["BreakerOpened"]),
    Row(
        "closed -> open on failure rate (count window)",
        [*ok(2), *fail(2)],
        BreakerState.OPEN,
        ["BreakerOpened"],
        RATE,
    ),
    Row("failure rate waits for min_calls", [*fail(3)], BreakerState.CLOSED, [], RATE),
    Row(
        "closed -> open on failure rate (time window)",
        [*ok(3), *tick(11), *ok(1), *fail(3)],
        BreakerState.OPEN,
        ["BreakerOpened"],
        TIME_RATE,
    ),
    Row(
        "time window forgets old successes (no trip without them)",
        [*ok(3), *tick(11), *fail(3)],
        BreakerState.CLOSED,
        [],
        TIME_RATE,
    ),
    Row(
        "closed -> open on slow-call rate (successes only)",
        [*ok(2, 0.1), *ok(3, 9.0)],
        BreakerState.OPEN,
        ["BreakerOpened"],
        BreakerPolicy(
            consecutive_failures=None,
            slow_call_rate=0.6,
            slow_call_seconds=5.0,
            window=SlidingWindow(size=5, min_calls=5),
            backoff=NO_JITTER,
        ),
    ),
    Row(
        "closed -> open on a failure burst despite successes between",
        [*fail(), *ok(), *fail(), *ok(), *fail()],
        BreakerState.OPEN,
        ["BreakerOpened"],
        BURST,
    ),
    Row(
        "a burst spread beyond its window does not trip",
        [*fail(), *tick(6), *fail(), *tick(6), *fail()],
        BreakerState.CLOSED,
        [],
        BURST,
    ),
    Row(
        "open stays open before retry_at",
        [*TO_OPEN, *tick(29.9), *ok()],
        BreakerState.OPEN,
        ["BreakerOpened"],
    ),
    Row(
        "open -> half_open when asked after retry_at",
        [*TO_HALF, ("poll",)],
        BreakerState.HALF_OPEN,
        ["BreakerOpened", "BreakerHalfOpened"],
    ),
    Row(
        "half_open -> closed on a successful trial",
        [*TO_HALF, *ok()],
        BreakerState.CLOSED,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerClosed"],
    ),
    Row(
        "half_open -> open on a failed trial",
        [*TO_HALF, *fail()],
        BreakerState.OPEN,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerOpened"],
    ),
    Row(
        "half_open -> open when a trial hangs past max_seconds",
        [*TO_HALF, ("admit",), *tick(61), ("poll",)],
        BreakerState.OPEN,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerOpened"],
    ),
    Row(
        "half_open with 3 trials closes at the ratio",
        [*TO_HALF, *ok(1), *fail(1), *ok(1)],
        BreakerState.CLOSED,
        ["BreakerOpened", "BreakerHalfOpened", "BreakerClosed"],
        BreakerPolicy(half_open=HalfOpenRule(trials=3, close_ratio=0.6), backoff=NO_JITTER),
    ),
    Row(
        "metrics_only would have opened but stays allowing",
        [*act("metrics_only"), *fail(5), *ok()],
        BreakerState.METRICS_ONLY,
        ["BreakerOverridden", "BreakerWouldHaveOpened"],
    ),
    Row(
        "disabled counts nothing", [*act("disable"), *fail(20)], BreakerState.DISABLED, ["BreakerOverridden"]
    ),
]
for source_name, path, source_transitions in (
    ("closed", [], []),
    ("open", TO_OPEN, ["BreakerOpened"]),
    ("half_open", [*TO_HALF, ("poll",)], ["BreakerOpened", "BreakerHalfOpened"]),
    ("forced_open", act("force_open"), ["BreakerOverridden"]),
    ("disabled", act("disable"), ["BreakerOverridden"]),
    ("metrics_only", act("metrics_only"), ["BreakerOverridden"]),
):
    for action, target in (
        ("force_open", BreakerState.FORCED_OPEN),
        ("disable", BreakerState.DISABLED),
        ("metrics_only", BreakerState.METRICS_ONLY),
        ("reset", BreakerState.CLOSED),
    ):
        ROWS.append(
            Row(
                f"{source_name} -> {target.value} by {action}",
                [*path, *act(action)],
                target,
                [*source_transitions, "BreakerOverridden"],
            )
        )


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_transition_table(row: Row) -> None:
    """Each path of inputs ends in the expected state, having emitted exactly the expected transitions."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("conn-1", row.policy, clock=clock, rng=random.Random(0))
    for step in row.steps:
        if step[0] == "poll":
            breaker.poll()
        elif step[0] == "admit":
            assert breaker.allow()
        else:
            run(breaker, clock, [step])
    events = breaker.drain_events()
    assert [e.TYPE for e in events if e.TYPE in TRANSITION_TYPES] == row.transitions
    assert breaker.state is row.state


def test_open_rejects_until_retry_at_with_reason() -> None:
    """An open breaker rejects calls until retry_at and says so, in the seed's (allowed, reason) shape too."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", BreakerPolicy(backoff=NO_JITTER), clock=clock, rng=random.Random(0))
    run(breaker, clock, fail(5))
    decision = breaker.allow()
    assert not decision
    assert decision.retry_at == T0 + 30.0
    assert decision.as_pair() == (False, "open until 1030.000")
    clock.advance(30.0)
    assert breaker.allow()


def test_half_open_event_is_dated_at_retry_at_not_when_noticed() -> None:
    """The lazily decided half-open transition is stamped with retry_at, so replay and what-if agree."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", BreakerPolicy(backoff=NO_JITTER), clock=clock, rng=random.Random(0))
    run(breaker, clock, fail(5))
    clock.advance(500.0)
    breaker.poll()
    half = breaker.drain_events()[-1]
    assert half.TYPE == "BreakerHalfOpened"
    assert half.at == T0 + 30.0


def test_half_open_admits_only_the_trials_and_rejects_the_rest() -> None:
    """With two trials, a half-open breaker admits two calls and rejects the third."""
    clock = FakeClock(T0)
    policy = BreakerPolicy(half_open=HalfOpenRule(trials=2), backoff=NO_JITTER)
    breaker = CircuitBreaker("c", policy, clock=clock, rng=random.Random(0))
    run(breaker, clock, [*fail(5), *tick(30)])
    decisions = [breaker.allow() for _ in range(3)]
    assert [bool(d) for d in decisions] == [True, True, False]
    assert decisions[2].reason == "half_open: trial calls in flight"


def test_late_result_from_before_a_transition_is_ignored() -> None:
    """A success admitted while closed, reported after the breaker opened and half-opened, closes nothing."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", BreakerPolicy(backoff=NO_JITTER), clock=clock, rng=random.Random(0))
    slow_call = breaker.allow()
    run(breaker, clock, [*fail(5), *tick(30)])
    trial = breaker.allow()
    breaker.record_success(slow_call.permit)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_failure(ErrorKind.TRANSPORT, permit=slow_call.permit)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success(trial.permit)
    assert breaker.state is BreakerState.CLOSED


def test_reopen_streak_grows_the_wait_and_decays_after_healthy_time() -> None:
    """Each failed trial doubles the wait; a trip long after the last close starts from base again."""
    clock = FakeClock(T0)
    policy = BreakerPolicy(
        backoff=OpenBackoff(base=10, multiplier=2, cap=1000, jitter="none", decay_after=100)
    )
    breaker = CircuitBreaker("c", policy, clock=clock, rng=random.Random(0))
    run(breaker, clock, fail(5))
    waits = [breaker.retry_at - clock()]  # type: ignore[operator]
    for _ in range(3):
        clock.set(breaker.retry_at)  # type: ignore[arg-type]
        run(breaker, clock, fail())
        waits.append(breaker.retry_at - clock())  # type: ignore[operator]
    assert waits == [10.0, 20.0, 40.0, 80.0]
    clock.set(breaker.retry_at)  # type: ignore[arg-type]
    run(breaker, clock, ok())
    run(breaker, clock, [*tick(50), *fail(5)])  # soon after the close: the streak goes on
    assert breaker.streak == 4
    clock.set(breaker.retry_at)  # type: ignore[arg-type]
    run(breaker, clock, [*ok(), *tick(150), *fail(5)])  # healthy for longer than decay_after
    assert breaker.streak == 0
    assert breaker.retry_at == clock() + 10.0


def test_jittered_retry_at_is_recorded_in_the_event() -> None:
    """The drawn retry_at is the one in BreakerOpened, between base and the ceiling."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", BreakerPolicy(), clock=clock, rng=random.Random(3))
    run(breaker, clock, [*fail(5), *tick(30), *fail()])
    opened = [e for e in breaker.drain_events() if isinstance(e, BreakerOpened)]
    assert opened[-1].retry_at == breaker.retry_at
    assert T0 + 30 + 30 <= opened[-1].retry_at <= T0 + 30 + 60
    assert opened[-1].streak == 1


REOPEN = [*fail(5), *tick(30), *fail(), *tick(100), *fail(), *tick(200), *fail()]


def test_the_jitter_is_drawn_from_the_injected_source_only() -> None:
    """Each jittered wait is base + spread * the injected source's draw; nothing else is drawn."""
    clock = FakeClock(T0)
    source = CountingSource(0.25)
    breaker = CircuitBreaker("c", BreakerPolicy(), clock=clock, rng=source)
    run(breaker, clock, REOPEN)
    opened = [e for e in breaker.drain_events() if isinstance(e, BreakerOpened)]
    assert [e.streak for e in opened] == [0, 1, 2, 3]
    # The first open has no spread to draw from; the re-opens' ceilings are 60, 120 and 240 s.
    assert [e.retry_at - e.at for e in opened] == [30.0, 30 + 30 * 0.25, 30 + 90 * 0.25, 30 + 210 * 0.25]
    assert source.draws == 3


def test_a_breaker_is_deterministic_given_its_inputs() -> None:
    """Same inputs, same seed: the same events, jittered waits included; another seed differs."""

    def events(seed: int) -> list[BreakerEvent]:
        clock = FakeClock(T0)
        breaker = CircuitBreaker("c", BreakerPolicy(), clock=clock, rng=random.Random(seed))
        run(breaker, clock, REOPEN)
        return breaker.drain_events()

    assert events(9) == events(9)
    assert events(9) != events(10)


@pytest.mark.parametrize(
    ("level", "kind", "recorded"),
    [
        (BreakerLevel.CONNECTION, ErrorKind.VALIDATION, False),
        (BreakerLevel.MODEL, ErrorKind.VALIDATION, True),
        (BreakerLevel.MODEL, ErrorKind.INPUT, False),
        (BreakerLevel.CONNECTION, ErrorKind.CANCELLED, False),
        (BreakerLevel.CONNECTION, ErrorKind.DEVICE_LOST, True),
    ],
)
def test_uncounted_kinds_neither_trip_nor_log(level: BreakerLevel, kind: ErrorKind, recorded: bool) -> None:
    """Kinds the taxonomy never counts at a level leave no event and no trip; counted kinds do both."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", clock=clock, rng=random.Random(0), level=level)
    run(breaker, clock, fail(5, kind))
    assert (breaker.state is BreakerState.OPEN) is recorded
    assert any(isinstance(e, CallFailed) for e in breaker.drain_events()) is recorded


def test_policy_ignored_kind_is_logged_but_not_counted() -> None:
    """A kind the policy ignores is still logged (for what-if) with counted=False, and trips nothing."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker(
        "c", BreakerPolicy(ignored_kinds=frozenset({ErrorKind.TIMEOUT})), clock=clock, rng=random.Random(0)
    )
    run(breaker, clock, fail(6, ErrorKind.TIMEOUT))
    failures = [e for e in breaker.drain_events() if isinstance(e, CallFailed)]
    assert breaker.state is BreakerState.CLOSED
    assert len(failures) == 6
    assert not any(f.counted for f in failures)


def test_input_error_on_a_trial_frees_its_slot() -> None:
    """A trial ending in an input error says nothing about health: the next call is admitted as a trial."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", BreakerPolicy(backoff=NO_JITTER), clock=clock, rng=random.Random(0))
    run(breaker, clock, [*fail(5), *tick(30)])
    trial = breaker.allow()
    assert not breaker.allow()
    breaker.record_failure(ErrorKind.INPUT, permit=trial.permit)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_successes_in_closed_state_emit_no_events() -> None:
    """A thousand successes in CLOSED produce no event until a checkpoint summarises them in one."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", clock=clock, rng=random.Random(0))
    run(breaker, clock, ok(1000))
    assert breaker.drain_events() == []
    breaker.checkpoint()
    (summary,) = breaker.drain_events()
    assert isinstance(summary, CallsSummarised)
    assert summary.successes is not None
    assert summary.successes.n == 1000
    breaker.checkpoint()
    assert breaker.drain_events() == []


def test_failure_carries_the_successes_before_it() -> None:
    """A CallFailed event carries the count of successes recorded since the previous event."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", clock=clock, rng=random.Random(0))
    run(breaker, clock, [*ok(7), *fail()])
    (failed,) = breaker.drain_events()
    assert failed.successes is not None
    assert failed.successes.n == 7


def test_rejections_are_summarised_on_the_next_transition() -> None:
    """Rejected calls produce no event each; the half-open transition carries how many and when."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", BreakerPolicy(backoff=NO_JITTER), clock=clock, rng=random.Random(0))
    run(breaker, clock, fail(5))
    breaker.drain_events()
    for _ in range(40):
        breaker.allow()
        clock.advance(0.5)
    clock.set(T0 + 30.0)
    breaker.poll()
    (half,) = breaker.drain_events()
    assert half.rejections is not None
    assert (half.rejections.n, half.rejections.first_at, half.rejections.last_at) == (40, T0, T0 + 19.5)


def test_manual_changes_are_audited_with_who_and_why() -> None:
    """force_open records who and why, and its rejections quote them."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", clock=clock, rng=random.Random(0))
    breaker.force_open("alice", "maintenance window")
    (event,) = breaker.drain_events()
    assert isinstance(event, BreakerOverridden)
    assert (event.who, event.why, event.from_state, event.to_state) == (
        "alice",
        "maintenance window",
        "closed",
        "forced_open",
    )
    decision = breaker.allow()
    assert not decision
    assert decision.reason == "forced_open by alice: maintenance window"


@pytest.mark.parametrize(("who", "why"), [("", "x"), ("bob", "  "), (None, "x")])
def test_manual_change_without_who_or_why_is_refused(who: object, why: object) -> None:
    """An override without a who or a why raises ConfigurationError and changes nothing."""
    breaker = CircuitBreaker("c", clock=FakeClock(T0), rng=random.Random(0))
    with pytest.raises(ConfigurationError):
        breaker.disable(who, why)  # type: ignore[arg-type]
    assert breaker.state is BreakerState.CLOSED
    assert breaker.drain_events() == []


def test_reset_forgets_the_streak() -> None:
    """A reset breaker's next trip waits the base duration again."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("c", BreakerPolicy(backoff=NO_JITTER), clock=clock, rng=random.Random(0))
    run(breaker, clock, [*fail(5), *tick(30), *fail()])
    assert breaker.streak == 1
    breaker.reset("ops", "fixed the upstream")
    run(breaker, clock, fail(5))
    assert breaker.streak == 0
    assert breaker.retry_at == clock() + 30.0


def test_impossible_event_raises_invalid_transition() -> None:
    """Applying BreakerClosed to a closed breaker is refused with InvalidTransition."""
    breaker = CircuitBreaker("c", clock=FakeClock(T0), rng=random.Random(0))
    with pytest.raises(InvalidTransition, match="'close' is not allowed in state closed"):
        breaker.apply(BreakerClosed(key="c", at=T0))


def test_empty_key_is_refused() -> None:
    """A breaker needs a non-empty key."""
    with pytest.raises(ConfigurationError):
        CircuitBreaker("", clock=FakeClock(), rng=random.Random(0))


def test_model_breaker_never_locks_a_model_out_for_good() -> None:
    """However many times a model breaker re-opens, the wait stays under the cap and a success closes it."""
    clock = FakeClock(T0)
    policy = BreakerPolicy(backoff=OpenBackoff(base=30, cap=300))
    breaker = CircuitBreaker("c/m", policy, clock=clock, level=BreakerLevel.MODEL, rng=random.Random(5))
    run(breaker, clock, fail(5, ErrorKind.VALIDATION))
    for _ in range(50):
        assert breaker.retry_at is not None
        assert breaker.retry_at - clock() <= 300.0
        clock.set(breaker.retry_at)
        run(breaker, clock, fail(1, ErrorKind.VALIDATION))
    clock.set(breaker.retry_at)  # type: ignore[arg-type]
    run(breaker, clock, ok())
    assert breaker.state is BreakerState.CLOSED


def test_error_kind_may_be_given_by_value_and_a_wrong_one_is_refused() -> None:
    """record_failure takes 'transport' as ErrorKind.TRANSPORT, and refuses an unknown kind clearly."""
    breaker = CircuitBreaker("c", clock=FakeClock(T0), rng=random.Random(0))
    breaker.record_failure("transport")  # type: ignore[arg-type]
    (event,) = breaker.drain_events()
    assert isinstance(event, CallFailed)
    assert event.kind is ErrorKind.TRANSPORT
    with pytest.raises(ConfigurationError, match="'gremlins' is not an error kind"):
        breaker.record_failure("gremlins")  # type: ignore[arg-type]
