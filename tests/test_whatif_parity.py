"""What-if under the recording policy reproduces the recorded history exactly, whatever happened."""

from __future__ import annotations

import json
import random

from hypothesis import event, given, settings
from hypothesis import strategies as st

from poolwarden.breaker import CircuitBreaker
from poolwarden.breaker_events import BreakerOpened, from_recorded
from poolwarden.clock import FakeClock
from poolwarden.policy import BreakerLevel, BreakerPolicy, OpenBackoff
from poolwarden.whatif import what_if
from tests._breaker_support import Log
from tests.test_breaker_replay import POLICIES, common_ops, drive

JITTERED = [*POLICIES, BreakerPolicy(consecutive_failures=2, backoff=OpenBackoff(base=3.0, cap=50.0))]
operations = st.one_of(
    *common_ops * 3,
    st.tuples(st.just("storm"), st.integers(2, 6)),
    st.tuples(st.just("tick"), st.sampled_from([6.0, 45.0])),
    st.tuples(st.just("signal")),
    st.tuples(st.just("poll")),
    st.tuples(st.just("act"), st.sampled_from(["force_open", "disable", "metrics_only", "reset", "trip"])),
)


@settings(max_examples=400, deadline=None)
@given(
    policy_index=st.integers(0, len(JITTERED) - 1),
    level=st.sampled_from(list(BreakerLevel)),
    seed=st.integers(0, 2**16),
    ops=st.lists(operations, min_size=20, max_size=200),
)
def test_the_recording_policy_reproduces_every_transition(
    policy_index: int, level: BreakerLevel, seed: int, ops: list[tuple[object, ...]]
) -> None:
    """Random calls, trials that hang or answer late, recovery signals, overrides, trips and
    evictions, with jitter: replayed through its own policy, the log takes the same transitions at
    the same times (retry_at included), rejects as often, and ends in the same state."""
    policy = JITTERED[policy_index]
    clock = FakeClock(1_000.0)
    rng = random.Random(seed)

    ids = {
        BreakerLevel.CONNECTION: {"connection_id": "c"},
        BreakerLevel.MODEL: {"connection_id": "c", "model_id": "m"},
        BreakerLevel.STANDALONE: {},
    }[level]

    def new() -> CircuitBreaker:  # the ids say the level, as they do in a real log
        return CircuitBreaker("k", policy, clock=clock, rng=rng, level=level, **ids)

    breaker = new()
    log = Log()
    held: list[int | None] = []
    for op in [*ops, ("checkpoint",)]:
        name = op[0]
        if name == "tick":
            clock.advance(float(op[1]))  # type: ignore[arg-type]
        elif name == "signal":
            breaker.half_open_now("recovered: round trip verified")
        elif name in ("poll", "restart"):
            breaker.poll()
        elif name == "evict":
            breaker.checkpoint()
            log.add(breaker.drain_events())
            if breaker.at_rest:
                breaker.evict()
                log.add(breaker.drain_events())
                breaker = new()
                held.clear()
        else:
            drive(breaker, op, held)
        log.add(breaker.drain_events())
    result = what_if(log.records, policy).breakers.get("k")
    if result is None:
        return  # nothing was ever logged
    event(f"transitions: {min(len(result.recorded_transitions) // 5 * 5, 20)}+")
    event(f"half-open signals: {any(t[2].startswith('recovered') for t in result.transitions)}")
    event(f"manual trips: {any('manual' in t[2] for t in result.transitions)}")
    event(f"half-open timeouts: {any('half_open_timeout' in t[2] for t in result.transitions)}")
    event(f"closes: {any(t[0] == 'BreakerClosed' for t in result.transitions)}")
    assert result.transitions == result.recorded_transitions
    assert result.reproduces
    assert result.rejected == result.recorded_rejected
    assert result.unknown_outcome == 0
    assert result.final_state is breaker.state


def test_a_jittered_log_without_recorded_draws_still_reproduces() -> None:
    """A log from before draws were recorded (version 1 events) yields its waits from the policy."""
    policy = BreakerPolicy(consecutive_failures=1, backoff=OpenBackoff(base=3.0, cap=50.0))
    clock = FakeClock(1_000.0)
    breaker = CircuitBreaker("k", policy, clock=clock, rng=random.Random(5))
    log = Log()
    for _ in range(6):
        decision = breaker.allow()
        if decision:
            breaker.record_failure("transport", 0.1, decision.permit)
        log.add(breaker.drain_events())
        clock.advance(60.0)
    old = []
    for record in log.records:
        if record.type == "BreakerOpened":
            payload = {k: v for k, v in record.payload.items() if k not in ("who", "why", "draw")}
            record = record._replace(payload_json=json.dumps(payload), schema_version=1)
        old.append(record)
    assert any(isinstance(from_recorded(r), BreakerOpened) and r.schema_version == 1 for r in old)
    result = what_if(old, policy).breakers["k"]
    assert [t[:2] for t in result.transitions] == [t[:2] for t in result.recorded_transitions]
    assert result.opened == result.recorded_opened
