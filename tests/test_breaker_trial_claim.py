"""Half-open trials claimed through the log: one process runs a round's trials, whatever the
number of processes sharing the breaker (pure core, injected clock).

``Writer`` is what :class:`~poolwarden.aio.durable_breakers.DurableBreakers` does for one process,
without I/O, as in tests/test_breaker_merge.py, plus the two claim steps the driver takes: a
rebase tells the replayed breaker when this process's ``BreakerHalfOpened`` still applied after
the others' events (``take_claim``), and an append that met nobody confirms the claim it carried
(``confirm_claim``).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from poolwarden.breaker import ABANDONED, BreakerState, CircuitBreaker, TrialClaim
from poolwarden.breaker_events import (
    BreakerHalfOpened,
    BreakerOpened,
    BreakerTrialAdmitted,
    decided_on,
    from_recorded,
)
from poolwarden.clock import FakeClock
from poolwarden.errors import ConfigurationError
from poolwarden.policy import BreakerPolicy, ErrorKind, HalfOpenRule, OpenBackoff
from poolwarden.replay import restore
from tests._breaker_support import Log, trip

T0 = 1_000.0
WAIT = 30.0
TIMEOUT = 5.0
KEY = "payments"
STREAM = "breaker/" + KEY


def policy(trials: int = 1, max_seconds: float | None = 60.0) -> BreakerPolicy:
    return BreakerPolicy(
        consecutive_failures=3,
        backoff=OpenBackoff(base=WAIT, jitter="none"),
        half_open=HalfOpenRule(trials=trials, max_seconds=max_seconds),
    )


class Writer:
    """One process's claiming breaker on the shared stream of ``log``."""

    def __init__(self, log: Log, clock: FakeClock, rule: BreakerPolicy, seed: int = 0) -> None:
        self.log = log
        self.clock = clock
        self.policy = rule
        self.breaker = CircuitBreaker(KEY, rule, clock=clock, rng=random.Random(seed))
        self.breaker.claim_trials(TIMEOUT)
        self.known = 0

    def replayed(self) -> CircuitBreaker:
        breaker = restore(
            KEY,
            self.log.stream(STREAM),
            policy=self.policy,
            clock=self.clock,
            rng=random.Random(9),
            catch_up=False,
        )
        breaker.claim_trials(TIMEOUT)
        return breaker

    def flush(self) -> None:
        events = self.breaker.drain_events()
        if not events:
            return
        if self.log.versions.get(STREAM, 0) != self.known:
            replayed = self.replayed()
            events = decided_on(events, self.known)
            for event in events:
                if replayed.apply(event) and isinstance(event, BreakerHalfOpened):
                    replayed.take_claim()
            self.breaker.rebase(replayed)
        self.log.add(events)
        self.known = self.log.versions[STREAM]
        for event in events:
            if isinstance(event, BreakerHalfOpened):
                self.breaker.confirm_claim(event.at)

    def poll(self) -> None:
        if self.breaker.has_events:
            return
        for record in self.log.stream(STREAM)[self.known :]:
            self.breaker.merge(from_recorded(record))
            self.known = record.version


def opened_pair(rule: BreakerPolicy | None = None) -> tuple[Writer, Writer, FakeClock, Log]:
    """Two writers on one breaker that ``a`` tripped and ``b`` has seen open."""
    clock = FakeClock(T0)
    log = Log()
    rule = rule or policy()
    a, b = Writer(log, clock, rule, 1), Writer(log, clock, rule, 2)
    trip(a.breaker)
    a.flush()
    b.poll()
    assert b.breaker.state is BreakerState.OPEN
    return a, b, clock, log


def test_a_claim_admits_no_trial_until_the_log_has_it() -> None:
    """The call that half-opens the breaker is rejected; after the append, the trials run."""
    a, _, clock, _ = opened_pair()
    clock.advance(WAIT)
    first = a.breaker.allow()
    assert not first
    assert first.reason == "half_open: claiming the trial round through the log"
    assert a.breaker.trial_claim is TrialClaim.CLAIMING
    a.flush()
    assert a.breaker.trial_claim is TrialClaim.HELD
    trial = a.breaker.allow()
    assert trial.reason == "half_open trial"
    assert not a.breaker.allow()  # one trial per round
    a.breaker.record_success(trial.permit)
    assert a.breaker.state is BreakerState.CLOSED


def test_two_claims_at_once_the_first_in_the_log_runs_the_round_alone() -> None:
    """Both half-open at the same retry_at; the second append rebases and loses its claim; only
    one trial runs in all; its close reaches the other, and both equal the replayed log."""
    a, b, clock, log = opened_pair()
    clock.advance(WAIT)
    assert not a.breaker.allow()
    assert not b.breaker.allow()
    a.flush()
    b.flush()  # meets a's claim: superseded
    assert a.breaker.trial_claim is TrialClaim.HELD
    assert b.breaker.trial_claim is TrialClaim.ELSEWHERE
    admitted = [d for d in (a.breaker.allow(), b.breaker.allow(), b.breaker.allow(), a.breaker.allow()) if d]
    assert len(admitted) == 1
    refused = b.breaker.allow()
    assert refused.reason == "half_open: trial round held by another process"
    assert refused.retry_at == T0 + WAIT + TIMEOUT
    a.breaker.record_success(admitted[0].permit)
    a.flush()
    b.poll()
    assert b.breaker.state is a.breaker.state is BreakerState.CLOSED
    assert a.breaker.shared_state() == b.breaker.shared_state() == a.replayed().shared_state()
    half_opens = [r for r in log.stream(STREAM) if r.type == "BreakerHalfOpened"]
    assert len(half_opens) == 2
    assert half_opens[1].payload.get("decided_on") is not None


def test_a_claim_merged_before_the_local_wait_ended_holds_the_round_elsewhere() -> None:
    """Another's claim read by a poll: every local call is rejected, none is a trial."""
    a, b, clock, _ = opened_pair()
    clock.advance(WAIT)
    assert not a.breaker.allow()
    a.flush()
    b.poll()
    assert b.breaker.state is BreakerState.HALF_OPEN
    assert b.breaker.trial_claim is TrialClaim.ELSEWHERE
    assert not any(b.breaker.allow() for _ in range(10))
    assert not b.breaker.has_events  # rejecting emits nothing


def test_a_silent_owner_loses_the_round_after_the_claim_timeout() -> None:
    """A claim with no trial seen for TIMEOUT seconds is abandoned (no added wait, the streak
    kept), and the abandoning process claims a round of its own, which runs its trial."""
    a, b, clock, log = opened_pair()
    clock.advance(WAIT)
    assert not a.breaker.allow()
    a.flush()  # a holds the round, then dies
    b.poll()
    streak = b.breaker.streak
    clock.advance(TIMEOUT - 0.001)
    assert not b.breaker.allow()
    assert not b.breaker.has_events
    clock.advance(0.001)
    assert not b.breaker.allow()  # abandons, and claims a new round
    events = b.breaker.drain_events()
    assert [type(e) for e in events] == [BreakerOpened, BreakerHalfOpened]
    abandoned = events[0]
    assert isinstance(abandoned, BreakerOpened)
    assert abandoned.reason == ABANDONED
    assert abandoned.streak == streak
    assert abandoned.at == abandoned.retry_at == events[1].at == T0 + WAIT + TIMEOUT
    log.add(events)
    b.known = log.versions[STREAM]
    b.breaker.confirm_claim(events[1].at)
    assert b.breaker.allow().reason == "half_open trial"


def test_the_owners_trials_keep_its_round_until_max_seconds() -> None:
    """A trial of the owner, seen in the log, moves the give-up time to its max_seconds + timeout."""
    a, b, clock, _ = opened_pair(policy(max_seconds=20.0))
    clock.advance(WAIT)
    assert not a.breaker.allow()
    a.flush()
    clock.advance(1.0)
    assert a.breaker.allow()  # a's trial, in flight
    a.flush()
    b.poll()
    assert b.breaker.allow().retry_at == T0 + WAIT + 1.0 + 20.0 + TIMEOUT
    clock.advance(TIMEOUT + 10.0)
    assert not b.breaker.allow()
    assert not b.breaker.has_events


def test_no_max_seconds_means_a_trial_seen_holds_the_round_until_someone_acts() -> None:
    a, b, clock, _ = opened_pair(policy(max_seconds=None))
    clock.advance(WAIT)
    a.breaker.allow()
    a.flush()
    a.breaker.allow()
    a.flush()
    b.poll()
    clock.advance(3_600.0)
    decision = b.breaker.allow()
    assert not decision
    assert decision.retry_at is None
    assert not b.breaker.has_events


def test_an_abandon_that_meets_the_owners_close_is_superseded() -> None:
    """The owner closes while the other gives its round up: the close is first in the log, the
    abandon and its claim change nothing, everyone ends closed."""
    a, b, clock, _ = opened_pair()
    clock.advance(WAIT)
    a.breaker.allow()
    a.flush()
    b.poll()
    clock.advance(TIMEOUT)
    trial = a.breaker.allow()
    assert trial
    assert not b.breaker.allow()  # b gives up and claims (not yet appended)
    a.breaker.record_success(trial.permit)
    a.flush()
    b.flush()
    b.poll()
    a.poll()
    assert a.breaker.state is b.breaker.state is BreakerState.CLOSED
    assert a.breaker.shared_state() == b.breaker.shared_state() == a.replayed().shared_state()


def test_a_restored_half_open_breaker_holds_no_claim() -> None:
    a, _, clock, log = opened_pair()
    clock.advance(WAIT)
    a.breaker.allow()
    a.flush()
    restarted = Writer(log, clock, a.policy, 3)
    restarted.breaker = restarted.replayed()
    assert restarted.breaker.trial_claim is TrialClaim.ELSEWHERE
    closed = CircuitBreaker(KEY, a.policy, clock=clock, rng=random.Random(0))
    assert closed.trial_claim is TrialClaim.OFF
    closed.claim_trials(TIMEOUT)
    assert closed.trial_claim is TrialClaim.NO_ROUND
    with pytest.raises(ConfigurationError):
        closed.claim_trials(0.0)


@pytest.mark.parametrize("seed", range(200))
def test_random_interleavings_never_multiply_trials(seed: int) -> None:
    """Three writers, random calls, flushes, polls and waits: each round (a half-open the log
    kept) admits at most ``trials`` calls, all in one process; all end in the replayed state."""
    rng = random.Random(seed)
    clock = FakeClock(T0)
    log = Log()
    rule = policy(trials=2, max_seconds=10.0)
    writers = [Writer(log, clock, rule, i) for i in range(3)]
    admitted: Counter[float] = Counter()
    owners: dict[float, set[int]] = {}
    in_flight: list[tuple[int, int]] = []
    for _ in range(400):
        i = rng.randrange(3)
        writer = writers[i]
        roll = rng.random()
        if roll < 0.45:
            decision = writer.breaker.allow()
            if decision and writer.breaker.state is BreakerState.HALF_OPEN:
                at = writer.breaker.half_opened_at
                assert at is not None
                assert writer.breaker.trial_claim is TrialClaim.HELD
                admitted[at] += 1
                owners.setdefault(at, set()).add(i)
            if decision:
                in_flight.append((i, decision.permit or 0))
        elif roll < 0.6 and in_flight:
            j, permit = in_flight.pop(rng.randrange(len(in_flight)))
            if rng.random() < 0.5:
                writers[j].breaker.record_success(permit)
            else:
                writers[j].breaker.record_failure(ErrorKind.TRANSPORT, None, permit)
        elif roll < 0.8:
            writer.flush()
        elif roll < 0.95:
            writer.poll()
        else:
            clock.advance(rng.choice((1.0, 6.0, WAIT)))
    for writer in writers:
        writer.breaker.checkpoint()
        writer.flush()
    for writer in writers:
        writer.poll()
    assert all(n <= rule.half_open.trials for n in admitted.values()), admitted
    assert all(len(who) == 1 for who in owners.values()), owners
    expected = writers[0].replayed().shared_state()
    assert all(w.breaker.shared_state() == expected for w in writers)
    trials_logged = [r for r in log.records if r.type == BreakerTrialAdmitted.TYPE]
    assert len(trials_logged) == sum(admitted.values())
