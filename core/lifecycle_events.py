"""The connection lifecycle's events, and the fold that turns them back into its state.

Each event is a frozen dataclass named in the past tense, stored by :mod:`poolwarden.codec`:
fields named like the store's indexed columns (``connection_id``, ``browser``, ``error_kind``,
``from_state``, ``to_state``, ``rung``, ``outcome``, ``latency_ms``) become those columns; the
rest go into the JSON payload. The live
machine and the restore fold apply events through the same :meth:`LifecycleRecord.apply`, so a
state restored from the log is the live state by construction; the property tests check it.

Events of one recovery share one ``incident_id``. They go to the stream ``connection/<id>``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from poolwarden.codec import REGISTRY, DomainEvent
from poolwarden.errors import ReplayError
from poolwarden.events import RecordedEvent
from poolwarden.lifecycle_types import ConnectionState, Phase, Rung

__all__ = [
    "SNAPSHOT_SCHEMA",
    "ConnectionClosed",
    "ConnectionCreated",
    "ConnectionQuarantined",
    "ConnectionResumed",
    "ConnectionStarted",
    "DrainStarted",
    "LifecycleEvent",
    "LifecycleRecord",
    "RecoveryCompleted",
    "RecoveryResumed",
    "RecoveryStarted",
    "RungAttempted",
    "RungFailed",
    "RungSucceeded",
    "RungVerificationStarted",
    "decode_event",
    "fold",
    "stream_of",
]

SNAPSHOT_SCHEMA = 1
"""Version of the dict :meth:`LifecycleRecord.to_dict` writes."""


def stream_of(connection_id: str) -> str:
    """The store stream that holds a connection's lifecycle events."""
    return f"connection/{connection_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleEvent(DomainEvent):
    """What every lifecycle event carries: whose, when, which browser, which incident.

    Stored by :mod:`poolwarden.codec`: the fields named like the envelope's columns are those
    columns, ``occurred_at`` is the event's time, the rest go to the payload.
    """

    connection_id: str
    occurred_at: float
    browser: str | None = None
    incident_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionCreated(LifecycleEvent):
    """A connection was created and its browser launched; it waits for a hello until ``start_deadline``."""

    start_deadline: float
    to_state: ConnectionState = ConnectionState.STARTING


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionStarted(LifecycleEvent):
    """The first hello arrived; ``latency_ms`` since the launch (or resume)."""

    latency_ms: float
    from_state: ConnectionState = ConnectionState.STARTING
    to_state: ConnectionState = ConnectionState.HEALTHY


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryStarted(LifecycleEvent):
    """A fault (or a finished drain) opened a recovery incident, to begin at ``rung``.

    ``planned`` recoveries (recycling) do not spend the restart budget.
    """

    trigger: str
    error_kind: str | None
    close_code: int | None
    from_state: ConnectionState
    rung: Rung
    overall_deadline: float
    planned: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RungAttempted(LifecycleEvent):
    """The action of ``rung`` was issued as step ``attempt``; it must succeed by ``deadline``."""

    rung: Rung
    method: str
    attempt: int
    deadline: float
    charged: bool
    error_kind: str | None
    from_state: ConnectionState
    to_state: ConnectionState


@dataclass(frozen=True, slots=True, kw_only=True)
class RungVerificationStarted(LifecycleEvent):
    """The rung's action succeeded; a round trip is being verified as step ``attempt``."""

    rung: Rung
    attempt: int
    deadline: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RungSucceeded(LifecycleEvent):
    """The rung's round trip was verified; ``latency_ms`` since the rung was attempted."""

    rung: Rung
    attempt: int
    latency_ms: float
    outcome: str = "succeeded"


@dataclass(frozen=True, slots=True, kw_only=True)
class RungFailed(LifecycleEvent):
    """The rung failed: ``outcome`` is ``failed``, ``timed_out`` or ``superseded`` (a worse fault came)."""

    rung: Rung
    attempt: int
    phase: Phase
    outcome: str
    error_kind: str | None
    latency_ms: float
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryCompleted(LifecycleEvent):
    """The connection serves again, recovered by ``rung``; ``latency_ms`` since the fault."""

    rung: Rung
    error_kind: str | None
    from_state: ConnectionState
    latency_ms: float
    to_state: ConnectionState = ConnectionState.HEALTHY
    outcome: str = "recovered"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionQuarantined(LifecycleEvent):
    """Recovery gave up (``outcome``: ``budget_exhausted`` or ``deadline_exceeded``)."""

    rung: Rung | None
    error_kind: str | None
    from_state: ConnectionState
    outcome: str
    latency_ms: float
    to_state: ConnectionState = ConnectionState.FAILED


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainStarted(LifecycleEvent):
    """Proactive recycling began: in-flight work finishes, no new work, restart by ``deadline``."""

    reason: str
    deadline: float
    from_state: ConnectionState = ConnectionState.HEALTHY
    to_state: ConnectionState = ConnectionState.DRAINING


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(LifecycleEvent):
    """The connection was closed on request; an open incident (``incident_id``) was abandoned."""

    from_state: ConnectionState
    to_state: ConnectionState = ConnectionState.CLOSED


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionResumed(LifecycleEvent):
    """After a restart of poolwarden, the connection's browser is launched afresh.

    ``downtime_s`` is the time since the last event the previous process recorded.
    """

    from_state: ConnectionState
    start_deadline: float
    downtime_s: float
    to_state: ConnectionState = ConnectionState.STARTING


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryResumed(LifecycleEvent):
    """After a restart of poolwarden, an interrupted recovery goes on, with a new overall deadline."""

    from_state: ConnectionState
    interrupted_rung: Rung | None
    overall_deadline: float
    downtime_s: float


_CLASSES: tuple[type[LifecycleEvent], ...] = (
    ConnectionCreated,
    ConnectionStarted,
    RecoveryStarted,
    RungAttempted,
    RungVerificationStarted,
    RungSucceeded,
    RungFailed,
    RecoveryCompleted,
    ConnectionQuarantined,
    DrainStarted,
    ConnectionClosed,
    ConnectionResumed,
    RecoveryResumed,
)
REGISTRY.register(*_CLASSES)
_EVENT_TYPES: dict[str, type[LifecycleEvent]] = {cls.TYPE: cls for cls in _CLASSES}


def decode_event(recorded: RecordedEvent) -> LifecycleEvent | None:
    """The typed lifecycle event a stored event holds (upcast to its current schema version by
    :mod:`poolwarden.codec`), or ``None`` if it is not a lifecycle event.

    Other components may record their own events (errors seen, say) on a connection's stream;
    the fold skips them.
    """
    cls = _EVENT_TYPES.get(recorded.type)
    if cls is None:
        return None
    return REGISTRY.decode_as(cls, recorded)


@dataclass(slots=True)
class LifecycleRecord:
    """Everything the lifecycle machine decides from, folded from its events.

    The live machine is the transitions model of this record: transitions sets ``state``, and
    :meth:`apply` sets the rest. The restore fold calls :meth:`apply` alone.
    """

    connection_id: str
    browser: str | None = None
    state: ConnectionState = ConnectionState.STARTING
    since: float = 0.0
    updated_at: float = 0.0
    incident_id: str | None = None
    incident_started_at: float | None = None
    incident_planned: bool = False
    incident_error_kind: str | None = None
    overall_deadline: float | None = None
    rung: Rung | None = None
    phase: Phase | None = None
    attempt: int = 0
    step_started_at: float | None = None
    deadline: float | None = None
    restart_times: list[float] = field(default_factory=list)

    def apply(self, event: LifecycleEvent, restart_window_s: float) -> None:
        """Fold one event in. ``restart_window_s`` bounds the restart times kept for the budget."""
        t = event.occurred_at
        self.updated_at = t
        if event.browser is not None:
            self.browser = event.browser
        # Decided from the event alone: live, transitions has already set ``state`` by now.
        to_state = getattr(event, "to_state", None)
        if to_state is not None:
            if to_state is not getattr(event, "from_state", None):
                self.since = t
            self.state = to_state
        match event:
            case ConnectionCreated() | ConnectionResumed():
                self._end_incident()
                self.since = t
                self.deadline = event.start_deadline
            case ConnectionStarted():
                self.deadline = None
            case RecoveryStarted():
                self.incident_id = event.incident_id
                self.incident_started_at = t
                self.incident_planned = event.planned
                self.incident_error_kind = event.error_kind
                self.overall_deadline = event.overall_deadline
                self.rung = None
                self.phase = None
            case RecoveryResumed():
                self.overall_deadline = event.overall_deadline
            case RungAttempted():
                self.rung = event.rung
                self.phase = Phase.ACTING
                self.attempt = event.attempt
                self.step_started_at = t
                self.deadline = event.deadline
                if event.charged:
                    horizon = t - restart_window_s
                    self.restart_times = [s for s in self.restart_times if s > horizon]
                    self.restart_times.append(t)
            case RungVerificationStarted():
                self.phase = Phase.VERIFYING
                self.attempt = event.attempt
                self.deadline = event.deadline
            case RungSucceeded() | RungFailed():
                self.phase = None
                self.deadline = None
            case RecoveryCompleted() | ConnectionQuarantined() | ConnectionClosed():
                self._end_incident()
            case DrainStarted():
                self.deadline = event.deadline

    def _end_incident(self) -> None:
        self.incident_id = None
        self.incident_started_at = None
        self.incident_planned = False
        self.incident_error_kind = None
        self.overall_deadline = None
        self.rung = None
        self.phase = None
        self.step_started_at = None
        self.deadline = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (a snapshot's state)."""
        data: dict[str, Any] = {"schema": SNAPSHOT_SCHEMA}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, list):
                value = list(value)
            data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LifecycleRecord:
        """The record a :meth:`to_dict` dict describes."""
        if data.get("schema") != SNAPSHOT_SCHEMA:
            raise ReplayError(
                _snapshot_of(data), None, f"snapshot schema {data.get('schema')!r} is not {SNAPSHOT_SCHEMA}"
            )
        kwargs: dict[str, Any] = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        try:
            for name, enum_type in _RECORD_ENUMS.items():
                if kwargs.get(name) is not None:
                    kwargs[name] = enum_type(kwargs[name])
            kwargs["restart_times"] = [float(s) for s in kwargs.get("restart_times", [])]
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ReplayError(_snapshot_of(data), None, f"snapshot: {type(exc).__name__}: {exc}") from exc


def _snapshot_of(data: Mapping[str, Any]) -> str:
    """The stream a snapshot dict belongs to, for error messages."""
    return stream_of(str(data.get("connection_id", "?")))


_RECORD_ENUMS: dict[str, type[enum.Enum]] = {"state": ConnectionState, "rung": Rung, "phase": Phase}


def fold(
    connection_id: str,
    events: Iterable[RecordedEvent | LifecycleEvent],
    *,
    restart_window_s: float,
    snapshot: Mapping[str, Any] | None = None,
) -> LifecycleRecord:
    """Fold ``events`` (those after ``snapshot``, if one is given) into a connection's record."""
    record = LifecycleRecord.from_dict(snapshot) if snapshot is not None else LifecycleRecord(connection_id)
    for item in events:
        event = decode_event(item) if isinstance(item, RecordedEvent) else item
        if event is not None:
            record.apply(event, restart_window_s)
    return record
