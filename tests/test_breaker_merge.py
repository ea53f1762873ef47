"""Sharing one breaker between processes, in the pure core: the merge rule on an injected clock.

Each ``Writer`` below is what :class:`~poolwarden.aio.durable_breakers.DurableBreakers` does for one
process, without I/O: it appends its breaker's events to an in-memory log with an expected
version, and when the log moved meanwhile it replays the log, folds its own events after the
others' (marked ``decided_on``) and rebases; between appends it follows the others' events with
``merge``. Whatever the interleaving, every writer ends in the state a replay of the log gives.
"""

from __future__ import annotations

import random

import pytest

from poolwarden.breaker import BreakerState, CircuitBreaker
from poolwarden.breaker_events import (
    BreakerEvicted,
    BreakerOpened,
    CallFailed,
    CallsSummarised,
    decided_on,
    from_recorded,
)
from poolwarden.clock import FakeClock
from poolwarden.errors import InvalidTransition
from poolwarden.policy import BreakerPolicy, ErrorKind, HalfOpenRule, OpenBackoff
from poolwarden.replay import restore
from tests._breaker_support import Log, trip

T0 = 1_000.0
POLICY = BreakerPolicy(
    consecutive_failures=3,
    backoff=OpenBackoff(base=30.0, jitter="none"),
    half_open=HalfOpenRule(trials=1),
)
KEY = "payments"


class Writer:
    """One process's breaker on the shared stream ``breaker/payments`` of ``log``."""

    def __init__(self, log: Log, clock: FakeClock, seed: int = 0) -> None:
        self.log = log
        self.clock = clock
        self.breaker = CircuitBreaker(KEY, POLICY, clock=clock, rng=random.Random(seed))
        self.known = 0
        self.appended = 0

    def replayed(self) -> CircuitBreaker:
        """The breaker as a replay of the whole log gives it."""
        return restore(
            KEY,
            self.log.stream("breaker/" + KEY),
            policy=POLICY,
            clock=self.clock,
            rng=random.Random(99),
            catch_up=False,
        )

    def flush(self) -> None:
        """Append this writer's events, rebasing them onto the others' first if the log moved."""
        events = self.breaker.drain_events()
        head = self.log.versions.get("breaker/" + KEY, 0)
        if events and head != self.known:
            replayed = self.replayed()
            events = decided_on(events, self.known)
            for event in events:
                replayed.apply(event)
            self.breaker.rebase(replayed)
        elif not events:
            return
        self.log.add(events)
        self.appended += len(events)
        self.known = self.log.versions["breaker/" + KEY]

    def poll(self) -> None:
        """Follow the others' events (only with nothing of our own pending, as the driver does)."""
        if self.breaker.has_events:
            return
        for record in self.log.stream("breaker/" + KEY)[self.known :]:
            self.breaker.merge(from_recorded(record))
            self.known = record.version


def test_a_foreign_trip_opens_the_local_breaker_with_its_times() -> None:
    """Another writer's BreakerOpened opens a closed breaker with that writer's opened_at and retry_at."""
    clock = FakeClock(T0)
    log = Log()
    a, b = Writer(log, clock), Writer(log, clock)
    trip(a.breaker)
    a.flush()
    clock.advance(0.4)
    b.poll()
    assert b.breaker.state is BreakerState.OPEN
    assert (b.breaker.opened_at, b.breaker.retry_at) == (T0, T0 + 30.0)
    decision = b.breaker.allow()
    assert not decision
    assert decision.retry_at == T0 + 30.0
    assert not b.breaker.has_events  # following a transition is not a new event


def test_foreign_outcomes_leave_the_local_window_alone() -> None:
    """Another writer's failures and summaries change nothing here: each process judges its own calls."""
    clock = FakeClock(T0)
    local = CircuitBreaker(KEY, POLICY, clock=clock, rng=random.Random(0))
    local.record_failure(ErrorKind.TRANSPORT)
    before = local.snapshot()
    for _ in range(5):
        assert not local.merge(CallFailed(key=KEY, at=T0, kind=ErrorKind.TRANSPORT))
    assert not local.merge(CallsSummarised(key=KEY, at=T0))
    assert local.snapshot() == before
    local.record_failure(ErrorKind.TRANSPORT)
    assert local.state is BreakerState.CLOSED  # two of its own failures, not seven


def test_concurrent_trips_first_in_the_log_wins_everywhere() -> None:
    """Two writers trip at about the same time: the later one's trip is superseded in replay, and
    both live breakers end with the first trip's retry_at."""
    clock = FakeClock(T0)
    log = Log()
    a, b = Writer(log, clock), Writer(log, clock)
    trip(a.breaker)
    clock.advance(1.0)
    trip(b.breaker)
    a.flush()
    b.flush()  # meets a's events: rebases
    a.poll()
    records = log.stream("breaker/" + KEY)
    assert [r.type for r in records].count("BreakerOpened") == 2
    assert [r.payload.get("decided_on") for r in records][-4:] == [0] * 4
    replayed = a.replayed()
    assert replayed.retry_at == T0 + 30.0
    assert a.breaker.shared_state() == b.breaker.shared_state() == replayed.shared_state()
    assert a.appended + b.appended == len(records) == 8


def test_an_override_beats_a_concurrent_trip() -> None:
    """An operator's force_open stands against a trip another writer decided without seeing it."""
    clock = FakeClock(T0)
    log = Log()
    a, b = Writer(log, clock), Writer(log, clock)
    a.breaker.force_open("ops", "maintenance")
    trip(b.breaker)
    a.flush()
    b.flush()
    a.poll()
    assert b.breaker.state is BreakerState.FORCED_OPEN
    assert a.breaker.shared_state() == b.breaker.shared_state() == a.replayed().shared_state()
    assert not b.breaker.allow()
    clock.advance(60.0)
    assert not b.breaker.allow()  # no half-open round: the superseded trip left no retry_at


def test_a_foreign_half_open_lets_the_local_breaker_admit_its_own_trial() -> None:
    """After another writer's BreakerHalfOpened this process admits its own trial, which closes it."""
    clock = FakeClock(T0)
    log = Log()
    a, b = Writer(log, clock), Writer(log, clock)
    trip(a.breaker)
    a.flush()
    b.poll()
    clock.advance(30.0)
    assert a.breaker.allow()  # a's trial, half-opening a
    a.flush()
    b.poll()
    assert b.breaker.state is BreakerState.HALF_OPEN
    decision = b.breaker.allow()
    assert decision.reason == "half_open trial"
    b.breaker.record_success(decision.permit)
    assert b.breaker.state is BreakerState.CLOSED
    b.flush()
    a.poll()
    assert a.breaker.state is BreakerState.CLOSED
    assert a.breaker.shared_state() == b.breaker.shared_state() == a.replayed().shared_state()


def test_a_marked_impossible_transition_is_superseded_an_unmarked_one_is_refused() -> None:
    """Replay skips a transition marked decided_on that the machine no longer allows; unmarked, it raises."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker(KEY, POLICY, clock=clock, rng=random.Random(0))
    opened = BreakerOpened(key=KEY, at=T0, from_state="closed", reason="x", retry_at=T0 + 30.0, streak=0)
    assert breaker.apply(opened)
    again = BreakerOpened(key=KEY, at=T0 + 1, from_state="closed", reason="x", retry_at=T0 + 31.0, streak=0)
    assert not breaker.apply(decided_on([again], 0)[0])
    assert breaker.retry_at == T0 + 30.0
    with pytest.raises(InvalidTransition):
        breaker.apply(again)


def test_rebase_onto_the_same_state_keeps_the_local_round() -> None:
    """A rebase that changes no shared state keeps the epoch, so calls admitted before still count."""
    clock = FakeClock(T0)
    local = CircuitBreaker(KEY, POLICY, clock=clock, rng=random.Random(0))
    decision = local.allow()
    local.record_failure(ErrorKind.TRANSPORT)
    twin = CircuitBreaker(KEY, POLICY, clock=clock, rng=random.Random(0))
    assert not local.rebase(twin)
    assert local.epoch == decision.permit
    local.record_failure(ErrorKind.TRANSPORT, None, decision.permit)
    local.record_failure(ErrorKind.TRANSPORT, None, decision.permit)
    assert local.state is BreakerState.OPEN  # the first failure was kept


def test_a_foreign_eviction_resets_the_streak_as_replay_does() -> None:
    """Another writer forgetting its idle, closed breaker resets the re-open streak here too."""
    clock = FakeClock(T0)
    local = CircuitBreaker(KEY, POLICY, clock=clock, rng=random.Random(0))
    local.streak, local.closed_at = 2, T0
    assert local.merge(BreakerEvicted(key=KEY, at=T0 + 700))
    assert (local.streak, local.closed_at) == (0, None)
    tripped = CircuitBreaker(KEY, POLICY, clock=clock, rng=random.Random(0))
    trip(tripped)
    assert not tripped.merge(decided_on([BreakerEvicted(key=KEY, at=T0)], 0)[0])
    assert tripped.state is BreakerState.OPEN


@pytest.mark.parametrize("seed", range(40))
def test_random_interleavings_converge_on_the_replayed_state(seed: int) -> None:
    """Three writers failing, succeeding, overriding, flushing and polling in a random order all
    end in the state a replay of the log gives, and the log holds every event each emitted."""
    rnd = random.Random(seed)
    clock = FakeClock(T0)
    log = Log()
    writers = [Writer(log, clock, seed=i) for i in range(3)]
    emitted = [0, 0, 0]
    for _ in range(300):
        i = rnd.randrange(3)
        writer = writers[i]
        breaker = writer.breaker
        roll = rnd.random()
        before = breaker.pending_events
        if roll < 0.45:
            decision = breaker.allow()
            if decision:
                if rnd.random() < 0.6:
                    breaker.record_failure(ErrorKind.TRANSPORT, None, decision.permit)
                else:
                    breaker.record_success(decision.permit)
        elif roll < 0.5:
            action = rnd.choice(["force_open", "reset", "disable", "metrics_only"])
            getattr(breaker, action)("ops", "test")
        elif roll < 0.7:
            clock.advance(rnd.choice([0.1, 1.0, 10.0, 31.0]))
        elif roll < 0.85:
            writer.flush()
            before = breaker.pending_events
        else:
            writer.poll()
            before = breaker.pending_events
        emitted[i] += breaker.pending_events - before
    for writer in writers:
        writer.flush()
    for writer in writers:
        writer.poll()
    replayed = writers[0].replayed()
    for writer in writers:
        assert writer.breaker.shared_state() == replayed.shared_state()
    assert [w.appended for w in writers] == emitted
    assert sum(emitted) == len(log.stream("breaker/" + KEY))
