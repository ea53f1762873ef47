"""Restore: a breaker rebuilt from its snapshot and events equals the live one, whatever happened."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from poolwarden.breaker import BreakerState, CircuitBreaker
from poolwarden.breaker_events import stream_of
from poolwarden.clock import FakeClock
from poolwarden.errors import ReplayError
from poolwarden.events import RecordedEvent, Snapshot
from poolwarden.policy import (
    BreakerLevel,
    BreakerPolicy,
    ErrorKind,
    FailureBurst,
    HalfOpenRule,
    OpenBackoff,
    SlidingWindow,
)
from poolwarden.replay import restore, restore_all
from tests._breaker_support import Log, simulate

T0 = 1_000.0
QUICK = OpenBackoff(base=5.0, multiplier=2.0, cap=40.0, decay_after=30.0)
POLICIES = [
    BreakerPolicy(consecutive_failures=3, backoff=QUICK),
    BreakerPolicy(
        consecutive_failures=None,
        failure_rate=0.5,
        slow_call_rate=0.5,
        slow_call_seconds=1.0,
        window=SlidingWindow(kind="count", size=8, min_calls=4),
        backoff=QUICK,
        half_open=HalfOpenRule(trials=3, close_ratio=0.6, max_seconds=7.0),
    ),
    BreakerPolicy(
        consecutive_failures=6,
        failure_rate=0.4,
        slow_call_rate=0.7,
        slow_call_seconds=1.0,
        window=SlidingWindow(kind="time", size=5, min_calls=3),
        backoff=QUICK,
        half_open=HalfOpenRule(trials=2, max_seconds=4.0),
    ),
    BreakerPolicy(
        consecutive_failures=None,
        failure_burst=FailureBurst(max_failures=3, within_seconds=4.0),
        backoff=QUICK,
        ignored_kinds=frozenset({ErrorKind.TIMEOUT}),
    ),
    BreakerPolicy(  # resilience4j's ways: judged rounds, slow trials count against them
        failure_rate=0.5,
        slow_call_rate=0.5,
        slow_call_seconds=1.0,
        window=SlidingWindow(kind="count", size=6, min_calls=3),
        backoff=QUICK,
        half_open=HalfOpenRule(trials=3, successes=2, verdict="round", max_seconds=None),
    ),
    BreakerPolicy(  # Polly's: rates judged after failures only, a fixed wait
        failure_rate=0.5,
        window=SlidingWindow(kind="time", size=5, min_calls=3),
        backoff=OpenBackoff.fixed(5.0),
        half_open=HalfOpenRule(trials=2, successes=2, max_seconds=6.0),
        judge_rates="after_failure",
    ),
]

kinds = st.sampled_from(list(ErrorKind))
durations = st.one_of(st.none(), st.sampled_from([0.1, 0.5, 2.0]))
ok_op = st.tuples(st.just("ok"), durations)
fail_op = st.tuples(
    st.just("fail"), st.sampled_from([ErrorKind.TRANSPORT, ErrorKind.TIMEOUT]) | kinds, durations
)
tick_op = st.tuples(st.just("tick"), st.sampled_from([0.3, 1.0, 2.5, 6.0, 45.0]))
common_ops = [
    st.tuples(st.just("storm"), st.integers(2, 6)),
    st.tuples(st.just("storm"), st.integers(2, 6)),
    ok_op,
    ok_op,
    fail_op,
    fail_op,
    fail_op,
    fail_op,
    tick_op,
    tick_op,
    st.tuples(st.just("hold")),
    st.tuples(st.just("release_ok")),
    st.tuples(st.just("release_fail"), kinds),
    st.tuples(st.just("checkpoint")),
    st.tuples(st.just("restart"), st.booleans()),
    st.tuples(st.just("evict")),
]
# Repeated branches weight the draw: mostly calls, time and restarts, rarely a manual override.
operations = st.one_of(
    *common_ops * 3,
    st.tuples(st.just("act"), st.sampled_from(["force_open", "disable", "metrics_only", "reset", "trip"])),
)


class Process:
    """A breaker whose events go to a log, as a running process's would."""

    def __init__(self, breaker: CircuitBreaker, log: Log) -> None:
        self.breaker = breaker
        self.log = log


def drive(breaker: CircuitBreaker, op: tuple[object, ...], held: list[int | None]) -> None:
    """Apply one operation to a breaker; ``held`` keeps permits of calls still in flight."""
    name = op[0]
    if name == "storm":  # a run of transport failures, the usual way into OPEN
        for _ in range(int(op[1])):  # type: ignore[call-overload]
            drive(breaker, ("fail", ErrorKind.TRANSPORT, 0.5), held)
    elif name in ("ok", "fail"):
        decision = breaker.allow()
        if decision:
            if name == "ok":
                breaker.record_success(decision.permit, op[1])  # type: ignore[arg-type]
            else:
                breaker.record_failure(op[1], op[2], decision.permit)  # type: ignore[arg-type]
    elif name == "hold":
        decision = breaker.allow()
        held.append(decision.permit if decision else None)
    elif name == "release_ok" and held:
        permit = held.pop(0)
        if permit is not None:
            breaker.record_success(permit, 0.2)
    elif name == "release_fail" and held:
        permit = held.pop(0)
        if permit is not None:
            breaker.record_failure(op[1], 0.2, permit)  # type: ignore[arg-type]
    elif name == "checkpoint":
        breaker.checkpoint()
    elif name == "act":
        getattr(breaker, str(op[1]))("prop", "hypothesis")


def wire(events: list[object]) -> list[object]:
    """Events as the store would see them (comparable across two breakers)."""
    return [event.to_new_event() for event in events]  # type: ignore[attr-defined]


@settings(max_examples=400, deadline=None)
@given(
    policy_index=st.integers(0, len(POLICIES) - 1),
    level=st.sampled_from(list(BreakerLevel)),
    seed=st.integers(0, 2**16),
    ops=st.lists(operations, min_size=5, max_size=150),
)
def test_restored_equals_live_for_random_histories(
    policy_index: int, level: BreakerLevel, seed: int, ops: list[tuple[object, ...]]
) -> None:
    """After every restart, the breaker restored from snapshot + tail equals one that never restarted.

    Both then keep running side by side, so the restored one must also go on to emit exactly the
    same events as the never-restarted one.
    """
    policy = POLICIES[policy_index]
    clock = FakeClock(T0)
    live = CircuitBreaker("k", policy, clock=clock, rng=random.Random(seed), level=level, connection_id="c")
    process_rng = random.Random(seed)
    process = Process(
        CircuitBreaker("k", policy, clock=clock, rng=process_rng, level=level, connection_id="c"), Log()
    )
    snapshot: Snapshot | None = None
    held_live: list[int | None] = []
    held_process: list[int | None] = []
    for op in [*ops, ("restart", False)]:
        if op[0] == "tick":
            clock.advance(float(op[1]))  # type: ignore[arg-type]
            continue
        if op[0] == "evict":  # as the registry does to an idle breaker at rest
            for breaker in (live, process.breaker):
                breaker.checkpoint()
            emitted = process.breaker.drain_events()
            assert wire(emitted) == wire(live.drain_events())
            process.log.add(emitted)
            assert live.at_rest == process.breaker.at_rest
            if not live.at_rest:
                continue
            live.evict()
            process.breaker.evict()
            process.log.add(process.breaker.drain_events())
            live.drain_events()
            process.breaker = CircuitBreaker(
                "k", policy, clock=clock, rng=process_rng, level=level, connection_id="c"
            )
            assert process.breaker.snapshot() == live.snapshot()
            event("evicted")
            continue
        if op[0] == "restart":
            for breaker in (live, process.breaker):
                breaker.poll()
                breaker.checkpoint()
        else:
            drive(live, op, held_live)
            drive(process.breaker, op, held_process)
        event(f"visited {live.state.value}")
        emitted = process.breaker.drain_events()
        assert wire(emitted) == wire(live.drain_events())
        process.log.add(emitted)
        if op[0] != "restart":
            continue
        stream = stream_of("k")
        if op[1]:  # take a snapshot now, as the driver does every N events
            snapshot = Snapshot(
                stream, process.log.versions.get(stream, 0), process.breaker.snapshot(), clock()
            )
        restored = restore(
            "k",
            process.log.stream(stream),
            policy=policy,
            snapshot=snapshot,
            level=level,
            connection_id="c",
            clock=clock,
            rng=process_rng,
        )
        assert restored.snapshot() == live.snapshot()
        assert restored.drain_events() == []
        process.breaker = restored
        event(f"a restore in {restored.state.value}")


def test_restore_mid_half_open_round_keeps_trial_counts() -> None:
    """A restart between two trial results of one half-open round restores the successes already seen."""
    clock = FakeClock(T0)
    policy = BreakerPolicy(
        backoff=OpenBackoff(jitter="none"), half_open=HalfOpenRule(trials=3, close_ratio=1.0)
    )
    breaker = CircuitBreaker("k", policy, clock=clock, rng=random.Random(0))
    log = Log()
    for _ in range(5):
        breaker.record_failure(ErrorKind.TRANSPORT)
    clock.advance(30.0)
    permits = [breaker.allow().permit for _ in range(3)]
    breaker.record_success(permits[0])
    breaker.checkpoint()
    log.add(breaker.drain_events())
    restored = restore("k", log.records, policy=policy, clock=clock, rng=random.Random(0))
    assert (restored.trials_admitted, restored.trials_ok) == (3, 1)
    assert restored.snapshot() == breaker.snapshot()
    restored.record_success(permits[1])
    restored.record_success(permits[2])
    assert restored.state is BreakerState.CLOSED


def test_open_breaker_whose_wait_passed_while_down_restores_half_open() -> None:
    """A breaker restored after its retry_at comes back HALF_OPEN (never CLOSED), dated at retry_at."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker(
        "k", BreakerPolicy(backoff=OpenBackoff(jitter="none")), clock=clock, rng=random.Random(0)
    )
    for _ in range(5):
        breaker.record_failure(ErrorKind.TRANSPORT)
    log = Log()
    log.add(breaker.drain_events())
    clock.advance(3_600.0)  # the process was down for an hour
    restored = restore("k", log.records, clock=clock, rng=random.Random(0))
    assert restored.state is BreakerState.HALF_OPEN
    (half,) = restored.drain_events()
    assert (half.TYPE, half.at) == ("BreakerHalfOpened", T0 + 30.0)


def test_open_breaker_restored_before_its_wait_stays_open() -> None:
    """A breaker restored before its retry_at is still OPEN with the same retry_at."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker("k", clock=clock, rng=random.Random(2))
    for _ in range(5):
        breaker.record_failure(ErrorKind.TRANSPORT)
    log = Log()
    log.add(breaker.drain_events())
    clock.advance(10.0)
    restored = restore("k", log.records, clock=clock, rng=random.Random(0))
    assert restored.state is BreakerState.OPEN
    assert restored.retry_at == breaker.retry_at
    assert not restored.allow()


def test_snapshot_survives_json() -> None:
    """A snapshot written as JSON text and read back restores the same state."""
    clock = FakeClock(T0)
    policy = POLICIES[2]
    breaker = CircuitBreaker(
        "k",
        policy,
        clock=clock,
        rng=random.Random(0),
        level=BreakerLevel.MODEL,
        connection_id="c",
        model_id="m",
    )
    for i in range(7):
        breaker.record_success(duration=2.0 if i % 2 else 0.1)
        clock.advance(0.7)
    breaker.record_failure(ErrorKind.OUT_OF_MEMORY, 0.3)
    breaker.checkpoint()
    breaker.drain_events()
    data = json.loads(json.dumps(breaker.snapshot()))
    assert (
        CircuitBreaker.from_snapshot(data, policy, clock=clock, rng=random.Random(0)).snapshot()
        == breaker.snapshot()
    )


def test_unknown_event_type_raises_replay_error() -> None:
    """An event type the breaker does not know stops the replay with its stream and version."""
    record = RecordedEvent(1, "breaker/k", 1, "BreakerExploded", 1, T0, T0, "{}")
    with pytest.raises(ReplayError, match="'breaker/k' version 1"):
        restore("k", [record], clock=FakeClock(T0), rng=random.Random(0))


def test_impossible_recorded_event_raises_replay_error() -> None:
    """A recorded BreakerClosed on a closed breaker is a ReplayError, not a silent state change."""
    record = RecordedEvent(1, "breaker/k", 1, "BreakerClosed", 1, T0, T0, "{}", from_state="half_open")
    with pytest.raises(ReplayError, match="'close' is not allowed"):
        restore("k", [record], clock=FakeClock(T0), rng=random.Random(0))


def test_restore_all_rebuilds_every_breaker_of_an_interleaved_log() -> None:
    """500 breakers restored from a 20,000-event interleaved log each equal their live twin."""
    breakers, log, clock = simulate(500, 20_000, seed=11)
    policy = next(iter(breakers.values())).policy
    restored = restore_all(
        log.records, policy_for=lambda key, level: policy, clock=clock, rng=random.Random(0), catch_up=False
    )
    assert restored.keys() == breakers.keys()
    assert all(restored[key].snapshot() == breakers[key].snapshot() for key in breakers)
    states = {b.state for b in breakers.values()}
    assert {BreakerState.CLOSED, BreakerState.OPEN} <= states  # the log really exercised transitions


def test_restore_all_uses_snapshots_and_reads_only_the_tail() -> None:
    """Given snapshots, restore_all skips the events they cover and still rebuilds the exact state."""
    breakers, log, clock = simulate(50, 3_000, seed=5)
    policy = next(iter(breakers.values())).policy
    half = len(log.records) // 2
    partial = restore_all(
        log.records[:half],
        policy_for=lambda key, level: policy,
        clock=clock,
        rng=random.Random(0),
        catch_up=False,
    )
    versions: dict[str, int] = {}
    for record in log.records[:half]:
        versions[record.stream] = record.version
    snapshots = {
        stream_of(key): Snapshot(stream_of(key), versions[stream_of(key)], b.snapshot(), clock())
        for key, b in partial.items()
    }
    tail = log.records[half:]  # the covered prefix is not even offered
    restored = restore_all(
        tail,
        policy_for=lambda key, level: policy,
        snapshots=snapshots,
        clock=clock,
        rng=random.Random(0),
        catch_up=False,
    )
    assert all(restored[key].snapshot() == breakers[key].snapshot() for key in breakers)


@pytest.mark.slow
def test_restore_of_10k_breakers_from_1m_events_is_exact() -> None:
    """10,000 breakers restored from a 1,000,000-event log each equal their live twin."""
    breakers, log, clock = simulate(10_000, 1_000_000, seed=3)
    policy = next(iter(breakers.values())).policy
    restored = restore_all(
        log.records, policy_for=lambda key, level: policy, clock=clock, rng=random.Random(0), catch_up=False
    )
    assert len(restored) == 10_000
    assert all(restored[key].snapshot() == breakers[key].snapshot() for key in breakers)
