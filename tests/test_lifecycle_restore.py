"""Restoring a connection's lifecycle from its log (and snapshot) in a new process."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from poolwarden.clock import FakeClock
from poolwarden.errors import InvalidTransition, ReplayError
from poolwarden.events import RecordedEvent
from poolwarden.lifecycle import ConnectionLifecycle
from poolwarden.lifecycle_events import ConnectionResumed, RecoveryResumed, RungAttempted
from poolwarden.lifecycle_types import (
    ConnectionState,
    DeviceLost,
    LifecyclePolicy,
    OutOfMemory,
    ProcessExited,
    RestartBrowser,
    Rung,
    SocketClosed,
    Suspected,
    WakeAt,
)
from tests.lifecycle_support import CountingIds, SyncLog

S = ConnectionState
POLICY = LifecyclePolicy(
    start_timeout_s=10,
    ping_timeout_s=2,
    reconnect_timeout_s=3,
    restart_timeout_s=5,
    verify_timeout_s=1,
    recovery_timeout_s=12,
    drain_timeout_s=4,
    restart_budget=2,
    restart_window_s=30,
)


def new_connection() -> tuple[ConnectionLifecycle, FakeClock, SyncLog, CountingIds]:
    clock = FakeClock()
    ids = CountingIds()
    return (
        ConnectionLifecycle("c", browser="chromium", policy=POLICY, clock=clock, ids=ids),
        clock,
        SyncLog(clock),
        ids,
    )


def restart(log: SyncLog, clock: FakeClock, ids: CountingIds, **kwargs: Any) -> ConnectionLifecycle:
    """What a fresh process does: restore the connection from its stream."""
    return ConnectionLifecycle.restore("c", log.events, policy=POLICY, clock=clock, ids=ids, **kwargs)


def test_snapshot_round_trips_through_json() -> None:
    """A snapshot survives JSON and restores the same state without any events."""
    life, clock, _, ids = new_connection()
    life.hello()
    life.fault(ProcessExited())
    snap = json.loads(json.dumps(life.snapshot()))
    restored = ConnectionLifecycle.restore("c", [], snapshot=snap, policy=POLICY, clock=clock, ids=ids)
    assert restored.snapshot() == life.snapshot()
    assert restored.state is S.RESTARTING
    assert restored.restarts_in_window() == 1


def test_snapshot_plus_tail_equals_full_log() -> None:
    """Restoring from a snapshot and the events after it gives the state the whole log gives."""
    life, clock, log, ids = new_connection()
    life.hello()
    life.fault(Suspected())
    log.persist(life.drain_events())
    snap, at = life.snapshot(), len(log.events)
    clock.advance(2)
    life.tick()
    life.step_succeeded(life.attempt)
    log.persist(life.drain_events())
    from_snap = ConnectionLifecycle.restore(
        "c", log.events[at:], snapshot=snap, policy=POLICY, clock=clock, ids=ids
    )
    assert from_snap.snapshot() == restart(log, clock, ids).snapshot() == life.snapshot()


def test_in_flight_recovery_resumes_at_the_restart_rung() -> None:
    """A recovery interrupted by a process restart goes on in the same incident, by restarting the browser."""
    life, clock, log, ids = new_connection()
    life.hello()
    life.fault(SocketClosed(1001))
    log.persist(life.drain_events())
    clock.advance(100)
    restored = restart(log, clock, ids)
    assert restored.state is S.RECONNECTING
    assert restored.resume()
    resumed, attempted = restored.drain_events()
    assert isinstance(resumed, RecoveryResumed)
    assert isinstance(attempted, RungAttempted)
    assert resumed.incident_id == attempted.incident_id == "inc-1"
    assert resumed.interrupted_rung is Rung.RECONNECT
    assert resumed.downtime_s == pytest.approx(100)
    assert resumed.overall_deadline == clock() + POLICY.recovery_timeout_s
    assert attempted.charged
    assert restored.drain_commands() == [RestartBrowser(2), WakeAt(clock() + POLICY.restart_timeout_s)]


def test_crash_loop_ends_in_failed_across_restarts() -> None:
    """The restart budget survives process restarts, so a crash loop ends in FAILED."""
    life, clock, log, ids = new_connection()
    life.hello()
    life.fault(ProcessExited())
    log.persist(life.drain_events())
    for _ in range(3):
        clock.advance(1)
        life = restart(log, clock, ids)
        life.resume()
        log.persist(life.drain_events())
    assert life.state is S.FAILED
    assert log.events[-1].type == "ConnectionQuarantined"
    assert log.events[-1].outcome == "budget_exhausted"


def test_healthy_connection_restores_as_starting() -> None:
    """A connection that was serving is relaunched after a restart and waits for its hello again."""
    life, clock, log, ids = new_connection()
    life.hello()
    log.persist(life.drain_events())
    clock.advance(7)
    restored = restart(log, clock, ids)
    assert restored.resume()
    assert restored.state is S.STARTING
    (resumed,) = restored.drain_events()
    assert isinstance(resumed, ConnectionResumed)
    assert resumed.downtime_s == pytest.approx(7)
    assert restored.drain_commands() == [WakeAt(clock() + POLICY.start_timeout_s)]


@pytest.mark.parametrize("final", [S.FAILED, S.CLOSED])
def test_final_states_stay_after_resume(final: S) -> None:
    """A quarantined or closed connection stays so after a restart."""
    life, clock, log, ids = new_connection()
    if final is S.CLOSED:
        life.request_close()
    else:
        for _ in range(3):
            life.fault(ProcessExited())
            life.step_failed(life.attempt, "process_exit")
    log.persist(life.drain_events())
    restored = restart(log, clock, ids)
    assert restored.state is final
    assert not restored.resume()
    assert restored.drain_events() == []


def test_resume_is_only_for_a_restored_machine() -> None:
    """Resuming a live machine, or resuming twice, is an InvalidTransition."""
    life, clock, log, ids = new_connection()
    with pytest.raises(InvalidTransition):
        life.resume()
    log.persist(life.drain_events())
    restored = restart(log, clock, ids)
    restored.resume()
    with pytest.raises(InvalidTransition):
        restored.resume()


def test_restored_machine_takes_no_signal_before_resume() -> None:
    """Until resumed, a restored machine refuses signals (its browser is gone) but may be closed."""
    life, clock, log, ids = new_connection()
    life.hello()
    life.fault(Suspected())
    log.persist(life.drain_events())
    restored = restart(log, clock, ids)
    with pytest.raises(InvalidTransition, match="not resumed"):
        restored.fault(ProcessExited())
    with pytest.raises(InvalidTransition, match="not resumed"):
        restored.step_succeeded(restored.attempt)
    assert restored.state is S.PINGING
    assert restored.request_close()
    assert restored.state is S.CLOSED
    assert not restored.fault(ProcessExited())


def test_unknown_event_types_are_skipped() -> None:
    """Events other components put on a connection's stream do not disturb the fold."""
    life, clock, log, ids = new_connection()
    log.persist(life.drain_events())
    foreign = RecordedEvent(99, "connection/c", 2, "ErrorSeen", 1, clock(), clock(), '{"x": 1}')
    restored = ConnectionLifecycle.restore("c", [*log.events, foreign], policy=POLICY, clock=clock, ids=ids)
    assert restored.snapshot() == life.snapshot()


def test_corrupt_event_raises_restore_failed() -> None:
    """A lifecycle event missing a field it needs raises ReplayError, naming the event."""
    clock = FakeClock()
    broken = RecordedEvent(1, "connection/c", 1, "ConnectionCreated", 1, clock(), clock(), "{}")
    with pytest.raises(ReplayError, match="ConnectionCreated") as caught:
        ConnectionLifecycle.restore("c", [broken], policy=POLICY, clock=clock, ids=CountingIds())
    assert (caught.value.stream, caught.value.version) == ("connection/c", 1)


def test_snapshot_of_another_schema_is_refused() -> None:
    """A snapshot written with an unknown schema raises ReplayError rather than guessing."""
    with pytest.raises(ReplayError):
        ConnectionLifecycle.restore(
            "c", [], snapshot={"schema": 99}, policy=POLICY, clock=FakeClock(), ids=CountingIds()
        )


# --- the property: restored equals live, always -------------------------------------------------

FAULTS = [
    Suspected(),
    DeviceLost(),
    SocketClosed(1001),
    SocketClosed(1006),
    OutOfMemory(),
    ProcessExited(),
]

op = st.one_of(
    st.tuples(st.just("fault"), st.sampled_from(FAULTS)),
    st.tuples(st.just("hello"), st.none()),
    st.tuples(st.just("ok"), st.integers(-1, 0)),
    st.tuples(st.just("ok"), st.just(0)),
    st.tuples(st.just("fail"), st.sampled_from(["timeout", "transport", "validation"])),
    st.tuples(st.just("advance"), st.floats(0, 8)),
    st.tuples(st.just("tick"), st.none()),
    st.tuples(st.just("drain"), st.none()),
    st.tuples(st.just("drained"), st.none()),
    st.tuples(st.just("close"), st.sampled_from([True, False, False, False])),
    st.tuples(st.just("restart"), st.booleans()),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(op, max_size=60))
def test_restored_state_equals_live_state(ops: list[tuple[str, Any]]) -> None:
    """For any signals, clock steps and process restarts, the state folded from the log is the live state."""
    life, clock, log, ids = new_connection()
    snap: tuple[dict[str, Any], int] | None = None
    # Most sequences begin serving, so that every rung is reached often; restarts revisit STARTING.
    for name, arg in [("hello", None), *ops]:
        try:
            if name == "fault":
                life.fault(arg)
            elif name == "hello":
                life.hello()
            elif name == "ok":
                life.step_succeeded(life.attempt + arg)
            elif name == "fail":
                life.step_failed(life.attempt, arg)
            elif name == "advance":
                clock.advance(arg)
            elif name == "tick":
                life.tick()
            elif name == "drain":
                life.request_drain("age")
            elif name == "drained":
                life.drained()
            elif name == "close" and arg:
                life.request_close()
            elif name == "restart":
                # Half the restarts read a snapshot plus the tail, as the store's snapshots allow.
                if arg and snap is not None:
                    state, at = snap
                    life = ConnectionLifecycle.restore(
                        "c", log.events[at:], snapshot=state, policy=POLICY, clock=clock, ids=ids
                    )
                else:
                    life = restart(log, clock, ids)
                life.resume()
        except InvalidTransition:
            pass
        log.persist(life.drain_events())
        life.drain_commands()
        if name == "advance":
            snap = (json.loads(json.dumps(life.snapshot())), len(log.events))
        assert restart(log, clock, ids).snapshot() == life.snapshot()
        event(life.state.value)
