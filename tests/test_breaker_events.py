"""Breaker domain events: each converts to a NewEvent and back from the RecordedEvent unchanged."""

from __future__ import annotations

import pytest

from poolwarden.breaker import Decision
from poolwarden.breaker_events import (
    BreakerClosed,
    BreakerEvent,
    BreakerHalfOpened,
    BreakerOpened,
    BreakerOverridden,
    BreakerTrialAdmitted,
    BreakerTrialReleased,
    BreakerWouldHaveOpened,
    CallFailed,
    CallsSummarised,
    Rejections,
    Successes,
    from_recorded,
)
from poolwarden.errors import ReplayError
from poolwarden.events import RecordedEvent
from poolwarden.policy import ErrorKind
from tests._breaker_support import Log

IDENTITY = {"key": "c1/mlp", "at": 1_000.5, "connection_id": "c1", "model_id": "mlp"}
SUMMARIES = {
    "successes": Successes(n=7, slow=2, runs=((0, 3), (2, 2), (0, 2))),
    "rejections": Rejections(n=40, first_at=990.0, last_at=1_000.0),
}
EVENTS: list[BreakerEvent] = [
    CallFailed(kind=ErrorKind.DEVICE_LOST, duration=0.25, counted=True, slow=False, **IDENTITY, **SUMMARIES),
    CallFailed(kind=ErrorKind.TIMEOUT, duration=None, counted=False, slow=True, **IDENTITY),
    CallsSummarised(successes=Successes(n=3, buckets=((999, 2, 1), (1_000, 1, 0))), **{**IDENTITY}),
    BreakerOpened(from_state="closed", reason="failure_rate", retry_at=1_030.5, streak=2, **IDENTITY),
    BreakerHalfOpened(**IDENTITY, rejections=SUMMARIES["rejections"]),
    BreakerClosed(**IDENTITY),
    BreakerTrialAdmitted(permit=4, **IDENTITY),
    BreakerTrialReleased(kind=ErrorKind.CANCELLED, **IDENTITY),
    BreakerOverridden(
        action="force_open", from_state="closed", to_state="forced_open", who="a", why="b", **IDENTITY
    ),
    BreakerWouldHaveOpened(reason="slow_call_rate", **IDENTITY),
]


@pytest.mark.parametrize("event", EVENTS, ids=[e.TYPE for e in EVENTS])
def test_event_round_trips_through_the_store_shape(event: BreakerEvent) -> None:
    """An event written as a NewEvent and read back as a RecordedEvent is the same domain event."""
    log = Log()
    log.add([event])
    (record,) = log.records
    assert record.stream == "breaker/c1/mlp"
    assert (record.connection_id, record.model_id) == ("c1", "mlp")
    assert from_recorded(record) == event


def test_transition_events_fill_the_state_columns() -> None:
    """BreakerOpened fills from_state/to_state; CallFailed fills error_kind, latency_ms and outcome."""
    opened = EVENTS[3].to_new_event()
    failed = EVENTS[0].to_new_event()
    assert (opened.from_state, opened.to_state) == ("closed", "open")
    assert (failed.error_kind, failed.latency_ms, failed.outcome) == ("device_lost", 250.0, "counted")


def test_malformed_record_raises_replay_error() -> None:
    """A BreakerOpened without its retry_at is refused with the stream and version."""
    record = RecordedEvent(1, "breaker/k", 3, "BreakerOpened", 1, 1.0, 1.0, '{"reason": "x"}')
    with pytest.raises(ReplayError, match="'breaker/k' version 3: malformed BreakerOpened"):
        from_recorded(record)


def test_decisions_are_immutable() -> None:
    """A Decision shared between callers cannot be changed by one of them."""
    decision = Decision(True, "closed", None, 0)
    with pytest.raises(AttributeError, match="immutable"):
        decision.allowed = False
