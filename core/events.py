"""The event model: what is appended to the store and what comes back from it.

An event records one thing that happened: a breaker opened, a recovery rung was tried, an error
was seen. It belongs to a *stream* (``breaker/conn-1/toy-mlp``, ``connection/conn-1``,
``pool/main``) in which it has a *version* (1, 2, ...), and the store gives it a global
*position* that strictly increases across all streams.

The fields that analysis filters on (connection, model, browser, error kind, from/to state,
recovery rung, outcome, latency) are explicit attributes and real columns in the store, so no
query has to parse JSON. Everything else an event carries goes into its JSON ``payload``.
Event types are named in the past tense (``BreakerOpened``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["INDEXED_FIELDS", "AppendResult", "NewEvent", "RecordedEvent", "Snapshot"]

INDEXED_FIELDS: tuple[str, ...] = (
    "connection_id",
    "model_id",
    "browser",
    "error_kind",
    "from_state",
    "to_state",
    "rung",
    "outcome",
    "latency_ms",
)
"""The event attributes stored as their own columns, in column order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event about to be appended. ``occurred_at`` comes from the caller's injected clock."""

    type: str
    occurred_at: float
    payload: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = 1
    incident_id: str | None = None
    connection_id: str | None = None
    model_id: str | None = None
    browser: str | None = None
    error_kind: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    rung: str | None = None
    outcome: str | None = None
    latency_ms: float | None = None


class RecordedEvent:
    """An event as the store holds it.

    The payload is decoded from JSON the first time it is asked for, so replaying a long log
    pays for JSON only where a fold looks into payloads.
    """

    __slots__ = (
        "_payload",
        "_payload_json",
        "browser",
        "connection_id",
        "error_kind",
        "from_state",
        "incident_id",
        "latency_ms",
        "model_id",
        "occurred_at",
        "outcome",
        "position",
        "recorded_at",
        "rung",
        "schema_version",
        "stream",
        "to_state",
        "type",
        "version",
    )

    position: int
    stream: str
    version: int
    type: str
    schema_version: int
    occurred_at: float
    recorded_at: float
    incident_id: str | None
    connection_id: str | None
    model_id: str | None
    browser: str | None
    error_kind: str | None
    from_state: str | None
    to_state: str | None
    rung: str | None
    outcome: str | None
    latency_ms: float | None

    def __init__(
        self,
        position: int,
        stream: str,
        version: int,
        type: str,
        schema_version: int,
        occurred_at: float,
        recorded_at: float,
        payload_json: str,
        incident_id: str | None = None,
        connection_id: str | None = None,
        model_id: str | None = None,
        browser: str | None = None,
        error_kind: str | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        rung: str | None = None,
        outcome: str | None = None,
        latency_ms: float | None = None,
    ) -> None:
        self.position = position
        self.stream = stream
        self.version = version
        self.type = type
        self.schema_version = schema_version
        self.occurred_at = occurred_at
        self.recorded_at = recorded_at
        self._payload_json = payload_json
        self._payload: dict[str, Any] | None = None
        self.incident_id = incident_id
        self.connection_id = connection_id
        self.model_id = model_id
        self.browser = browser
        self.error_kind = error_kind
        self.from_state = from_state
        self.to_state = to_state
        self.rung = rung
        self.outcome = outcome
        self.latency_ms = latency_ms

    @property
    def payload(self) -> dict[str, Any]:
        """The event's JSON payload, decoded (once)."""
        if self._payload is None:
            self._payload = json.loads(self._payload_json)
        return self._payload

    @property
    def payload_json(self) -> str:
        """The payload exactly as stored."""
        return self._payload_json

    @property
    def occurred(self) -> datetime:
        """``occurred_at`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.occurred_at, tz=UTC)

    def to_new_event(self) -> NewEvent:
        """The event as it was appended (for copying a log, or feeding it through a what-if)."""
        return NewEvent(
            type=self.type,
            occurred_at=self.occurred_at,
            payload=self.payload,
            schema_version=self.schema_version,
            incident_id=self.incident_id,
            connection_id=self.connection_id,
            model_id=self.model_id,
            browser=self.browser,
            error_kind=self.error_kind,
            from_state=self.from_state,
            to_state=self.to_state,
            rung=self.rung,
            outcome=self.outcome,
            latency_ms=self.latency_ms,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _COMPARED)

    def __hash__(self) -> int:
        return hash((self.position, self.stream, self.version))

    def __repr__(self) -> str:
        return (
            f"RecordedEvent(position={self.position}, stream={self.stream!r}, version={self.version}, "
            f"type={self.type!r})"
        )


_COMPARED = (
    "position",
    "stream",
    "version",
    "type",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "payload_json",
    "incident_id",
    *INDEXED_FIELDS,
)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where a committed append landed: its stream versions and global positions."""

    stream: str
    first_version: int
    last_version: int
    first_position: int
    last_position: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stream's state folded up to ``version``, saved so that restore reads only the tail."""

    stream: str
    version: int
    state: Mapping[str, Any]
    taken_at: float
    schema_version: int = 1
