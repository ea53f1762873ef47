"""The event model: what is appended to the store and what comes back from it.

An event records one thing that happened: a breaker opened, a recovery rung was tried, an error
was seen. It belongs to a *stream* (``breaker/conn-1/toy-mlp``, ``connection/conn-1``,
``pool/main``) in which it has a *version* (1, 2, ...), and the store gives it a global
*position* that strictly increases across all streams.

The fields that analysis filters on (connection, model, browser, error kind, from/to state,
recovery rung, outcome, latency) are explicit attributes and real columns in the store, so no
query has to parse JSON. Everything else an event carries goes into its JSON ``payload``.
Event types are named in the past tense (``BreakerOpened``).

The columns themselves (names, types, nullability, dtypes) are defined once, in
:mod:`poolwarden.envelope`; :class:`NewEvent` and :class:`RecordedEvent` spell them out as fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from poolwarden.envelope import INDEXED_FIELDS

__all__ = ["INDEXED_FIELDS", "AppendResult", "NewEvent", "RecordedEvent", "Snapshot", "decode_json"]

_raw_decode = json.JSONDecoder().raw_decode


def decode_json(text: str) -> Any:
    """``json.loads(text)``, in half the time for the compact JSON the stores hold.

    ``raw_decode`` (documented, what ``loads`` calls) skips ``loads``'s two whitespace scans
    around the document; a restore decodes a payload per event. Text it does not take whole
    (leading or trailing whitespace, malformed, bytes) goes to ``json.loads``, which gives the
    same value or the same error as ever.
    """
    try:
        value, end = _raw_decode(text)
    except (ValueError, TypeError):  # TypeError: bytes, which json.loads decodes as ever
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


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


class RecordedEvent(NamedTuple):
    """An event as the store holds it.

    A named tuple: a replay builds a million of them from the rows SQLite returns, and a tuple is
    made from a row in one C call. The payload is decoded from JSON when it is asked for (each
    time: a fold reads it once), so a replay pays for JSON only where it looks into payloads.
    """

    position: int
    stream: str
    version: int
    type: str
    schema_version: int
    occurred_at: float
    recorded_at: float
    payload_json: str
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
    fence: int | None = None

    @property
    def payload(self) -> dict[str, Any]:
        """The event's JSON payload, decoded."""
        decoded: dict[str, Any] = decode_json(self.payload_json)
        return decoded

    @property
    def occurred(self) -> datetime:
        """``occurred_at`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.occurred_at, tz=UTC)

    @classmethod
    def of(
        cls,
        new: NewEvent,
        *,
        position: int,
        stream: str,
        version: int,
        recorded_at: float,
        fence: int | None = None,
    ) -> RecordedEvent:
        """``new`` as a store gives it back at ``position``, ``version`` of ``stream``, its payload
        JSON as the store writes it (compact, non-ASCII kept): for folding events in memory, as
        the benchmarks and tests do, without a store. The inverse of :meth:`to_new_event`."""
        return cls(
            position,
            stream,
            version,
            new.type,
            new.schema_version,
            new.occurred_at,
            recorded_at,
            json.dumps(dict(new.payload), separators=(",", ":"), ensure_ascii=False),
            new.incident_id,
            new.connection_id,
            new.model_id,
            new.browser,
            new.error_kind,
            new.from_state,
            new.to_state,
            new.rung,
            new.outcome,
            new.latency_ms,
            fence,
        )

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

    def __repr__(self) -> str:
        return (
            f"RecordedEvent(position={self.position}, stream={self.stream!r}, version={self.version}, "
            f"type={self.type!r})"
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
