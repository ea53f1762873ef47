"""Test helpers: breaker events recorded in memory as a store would number them, random traffic,
and a fixed random source."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

from poolwarden.breaker import CircuitBreaker
from poolwarden.breaker_events import BreakerEvent
from poolwarden.clock import FakeClock, system_clock
from poolwarden.events import RecordedEvent
from poolwarden.policy import BreakerLevel, BreakerPolicy, ErrorKind, OpenBackoff, SlidingWindow
from poolwarden.replay import restore_all

__all__ = ["CountingSource", "Log", "replayed_states", "simulate", "trip"]


class Log:
    """Breaker events recorded in memory as a store numbers them (per-stream versions, global positions)."""

    def __init__(self) -> None:
        self.records: list[RecordedEvent] = []
        self.versions: dict[str, int] = {}

    def add(self, events: Iterable[BreakerEvent]) -> None:
        """Record ``events`` as appended, in order."""
        for event in events:
            version = self.versions.get(event.stream, 0) + 1
            self.versions[event.stream] = version
            self.records.append(
                RecordedEvent.of(
                    event.to_new_event(),
                    position=len(self.records) + 1,
                    stream=event.stream,
                    version=version,
                    recorded_at=event.at,
                )
            )

    def stream(self, stream: str) -> list[RecordedEvent]:
        """The records of one stream, in version order."""
        return [record for record in self.records if record.stream == stream]


def replayed_states(records: Iterable[RecordedEvent], policy: BreakerPolicy) -> dict[str, Any]:
    """Each breaker's ``shared_state()`` as a replay of ``records`` (the whole log, no snapshot)
    gives it, in the shape it has after a trip through JSON (what child processes report)."""
    replayed = restore_all(
        records,
        policy_for=lambda key, level: policy,
        clock=system_clock,
        rng=random.Random(0),
        catch_up=False,
    )
    states: dict[str, Any] = json.loads(json.dumps({k: b.shared_state() for k, b in replayed.items()}))
    return states


def trip(breaker: CircuitBreaker, failures: int = 3) -> None:
    """``failures`` admitted calls in a row that fail (what opens a breaker of 3 consecutive failures)."""
    for _ in range(failures):
        decision = breaker.allow()
        breaker.record_failure(ErrorKind.TRANSPORT, None, decision.permit)


def simulate(
    n_breakers: int, n_events: int, *, seed: int = 0
) -> tuple[dict[str, CircuitBreaker], Log, FakeClock]:
    """Drive ``n_breakers`` connection breakers with random calls until their log holds ``n_events``.

    About 45% of calls fail (transport, timeout, page crash, or an input error that never
    counts). Returns the live breakers (checkpointed, nothing pending), the log and the clock.
    """
    rng = random.Random(seed)
    clock = FakeClock(1_700_000_000.0)
    policy = BreakerPolicy(  # both rules, as before a policy had only the rules it names
        consecutive_failures=5,
        failure_rate=0.5,
        window=SlidingWindow(size=20, min_calls=10),
        backoff=OpenBackoff(base=5.0, cap=60.0),
    )
    breakers = {
        f"conn-{i}": CircuitBreaker(
            f"conn-{i}",
            policy,
            clock=clock,
            rng=rng,
            level=BreakerLevel.CONNECTION,
            connection_id=f"conn-{i}",
        )
        for i in range(n_breakers)
    }
    keys = list(breakers)
    log = Log()
    kinds = (ErrorKind.TRANSPORT, ErrorKind.TIMEOUT, ErrorKind.INPUT, ErrorKind.PAGE_CRASH)
    while len(log.records) < n_events:
        clock.advance(rng.random() * 0.01)
        breaker = breakers[keys[rng.randrange(n_breakers)]]
        decision = breaker.allow()
        if decision:
            if rng.random() < 0.55:
                breaker.record_success(decision.permit, rng.random())
            else:
                breaker.record_failure(kinds[rng.randrange(4)], rng.random(), decision.permit)
        if rng.random() < 0.001:
            breaker.checkpoint()
        if breaker.has_events:
            log.add(breaker.drain_events())
    for breaker in breakers.values():
        breaker.checkpoint()
        log.add(breaker.drain_events())
    return breakers, log, clock


class CountingSource:
    """A RandomSource that always draws ``value`` and counts its draws."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return self.value
