"""What-if: a recorded log replayed through another policy."""

from __future__ import annotations

import json
import random

from poolwarden.breaker import CircuitBreaker
from poolwarden.breaker_events import CallFailed, from_recorded, stream_of
from poolwarden.clock import FakeClock
from poolwarden.policy import BreakerLevel, BreakerPolicy, ErrorKind, OpenBackoff, SlidingWindow
from poolwarden.whatif import what_if
from tests._breaker_support import Log, simulate

T0 = 1_000.0
RECORDING = BreakerPolicy(consecutive_failures=5, backoff=OpenBackoff(base=30.0, jitter="none"))


def recorded_outage() -> Log:
    """A connection called every second: 4 failures, recovery, then two minutes of failures."""
    clock = FakeClock(T0)
    breaker = CircuitBreaker(
        "conn-1",
        RECORDING,
        clock=clock,
        rng=random.Random(0),
        level=BreakerLevel.CONNECTION,
        connection_id="conn-1",
    )
    log = Log()

    def call(fails: bool) -> None:
        decision = breaker.allow()
        if decision:
            if fails:
                breaker.record_failure(ErrorKind.TRANSPORT, 0.2, decision.permit)
            else:
                breaker.record_success(decision.permit, 0.1)
        log.add(breaker.drain_events())
        clock.advance(1.0)

    for _ in range(50):
        call(False)
    for _ in range(4):
        call(True)
    for _ in range(50):
        call(False)
    for _ in range(120):
        call(True)
    for _ in range(100):
        call(False)
    breaker.checkpoint()
    log.add(breaker.drain_events())
    return log


def test_the_recording_policy_reproduces_the_recorded_history() -> None:
    """Replayed through its own policy, a log yields the recorded opens and rejections."""
    log = recorded_outage()
    result = what_if(log.records, RECORDING).breakers["conn-1"]
    assert result.opened == result.recorded_opened
    assert len(result.opened) >= 3
    assert result.rejected == result.recorded_rejected
    assert result.unknown_outcome == 0


def test_a_stricter_policy_opens_earlier_and_more_often() -> None:
    """Tripping on 3 failures opens on the first short burst the recorded breaker rode out."""
    log = recorded_outage()
    strict = BreakerPolicy(consecutive_failures=3, backoff=OpenBackoff(base=30.0, jitter="none"))
    result = what_if(log.records, strict).breakers["conn-1"]
    assert result.opened[0] < result.recorded_opened[0]
    assert result.opened[0] == T0 + 52.0  # the third of the first four failures
    assert result.rejected > 0


def test_a_laxer_policy_never_opens_and_flags_unknown_outcomes() -> None:
    """A policy needing 500 failures never opens; calls the recording rejected have unknown outcomes."""
    log = recorded_outage()
    lax = BreakerPolicy(consecutive_failures=500)
    result = what_if(log.records, lax).breakers["conn-1"]
    assert result.opened == ()
    assert result.rejected == 0
    assert result.unknown_outcome == result.recorded_rejected > 0


def test_policy_read_from_a_json_file_drives_the_what_if(tmp_path: object) -> None:
    """A policy written to a JSON file and read back gives the same report as the policy itself."""
    log = recorded_outage()
    policy = BreakerPolicy(
        consecutive_failures=None,
        failure_rate=0.5,
        window=SlidingWindow(kind="time", size=10, min_calls=5),
        backoff=OpenBackoff(base=10.0),
    )
    text = json.dumps(policy.to_dict())
    from_file = BreakerPolicy.from_dict(json.loads(text))
    assert what_if(log.records, from_file, seed=4) == what_if(log.records, policy, seed=4)
    assert what_if(log.records, policy, seed=4).breakers["conn-1"].opened


def test_closes_are_reported() -> None:
    """A breaker that recovers is reported closed after each open it recovers from."""
    log = recorded_outage()
    result = what_if(log.records, RECORDING).breakers["conn-1"]
    assert len(result.closed) == 1
    assert result.closed[0] > result.opened[-1]
    assert result.final_state.value == "closed"


def test_what_if_accounts_for_every_logged_call_of_a_mixed_log() -> None:
    """Every breaker of an interleaved log gets a result, and every call of the log is accounted for once."""
    breakers, log, _ = simulate(30, 3_000, seed=9)
    hair_trigger = BreakerPolicy(consecutive_failures=2, backoff=OpenBackoff(base=5.0, cap=60.0))
    report = what_if(log.records, lambda key, level: hair_trigger)
    assert report.breakers.keys() == breakers.keys()
    for key, result in report.breakers.items():
        events = [from_recorded(r) for r in log.stream(stream_of(key))]
        logged = sum(
            (e.successes.n if e.successes else 0)
            + (e.rejections.n if e.rejections else 0)
            + isinstance(e, CallFailed)
            for e in events
        )
        assert result.calls + result.rejected + result.unknown_outcome == logged
    assert sum(r.rejected for r in report.breakers.values()) > 0
