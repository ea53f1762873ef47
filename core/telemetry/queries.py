"""Aggregates over the event log that telemetry needs, as SQL on the indexed columns.

Each query is written once, as SQL plus a function that shapes its rows, and runs either through
an open :class:`~poolwarden.storage.EventStore` (``await log_counts(store)``) or on a plain
read-only ``sqlite3`` connection (``log_counts_sync(path)``, for the seed's synchronous
``export_telemetry``). The columns (model_id, connection_id, outcome, rung, latency_ms) hold
what is counted; only the pool's summaries of successful requests (``InferencesServed``, one
per connection, model and batch) are looked into, for their count and latency totals.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolwarden.events import NewEvent
from poolwarden.lifecycle_events import (
    ConnectionQuarantined,
    RecoveryCompleted,
    RecoveryStarted,
    RungAttempted,
    RungSucceeded,
)
from poolwarden.memory import MemorySampled
from poolwarden.pool_events import (
    AttemptFailed,
    InferenceFailed,
    InferenceServed,
    InferencesServed,
    ModelPlaced,
)
from poolwarden.pool_streams import PoolStreams, pool_of
from poolwarden.storage import EventStore

__all__ = [
    "COUNTED_FAMILIES",
    "HISTORY_BUCKETS",
    "HISTORY_BUCKET_S",
    "BrowserFigures",
    "ConnectionCounts",
    "HistoryBucket",
    "IncidentCounts",
    "LogCounts",
    "RequestCounts",
    "RungCounts",
    "browser_figures",
    "counted_streams",
    "log_counts",
    "log_counts_sync",
    "owned_streams",
    "pool_counted_streams",
]

# The type names, from the event classes.
_SERVED, _SERVED_SUMMARY, _FAILED = InferenceServed.TYPE, InferencesServed.TYPE, InferenceFailed.TYPE
_ATTEMPT_FAILED, _MODEL_PLACED = AttemptFailed.TYPE, ModelPlaced.TYPE
_ATTEMPTED, _SUCCEEDED, _COMPLETED = RungAttempted.TYPE, RungSucceeded.TYPE, RecoveryCompleted.TYPE
_STARTED, _QUARANTINED, _SAMPLED = RecoveryStarted.TYPE, ConnectionQuarantined.TYPE, MemorySampled.TYPE

HISTORY_BUCKET_S = 60
"""Width of ``performance_history``'s buckets, seconds."""
HISTORY_BUCKETS = 60
"""How many of the latest buckets ``performance_history`` holds (an hour, by default)."""

# The queries are written in the SQL SQLite and PostgreSQL both read (the PostgreSQL store's
# fetch() turns json_extract into jsonb's ->>, which gives text: hence the CASTs). DOUBLE
# PRECISION is SQLite's REAL and PostgreSQL's 64-bit float.
_REAL = "DOUBLE PRECISION"

_REQUESTS = (
    "SELECT model_id, connection_id, MAX(browser),"
    f" SUM(CASE type WHEN '{_SERVED}' THEN 1 WHEN '{_SERVED_SUMMARY}'"
    " THEN CAST(json_extract(payload, '$.n') AS INTEGER) ELSE 0 END),"
    f" SUM(CASE WHEN type = '{_FAILED}' THEN 1 ELSE 0 END),"
    f" SUM(CASE type WHEN '{_SERVED}' THEN latency_ms"
    f" WHEN '{_SERVED_SUMMARY}' THEN CAST(json_extract(payload, '$.latency_ms_total') AS {_REAL}) END),"
    f" MAX(CASE type WHEN '{_SERVED}' THEN latency_ms"
    f" WHEN '{_SERVED_SUMMARY}' THEN CAST(json_extract(payload, '$.latency_ms_max') AS {_REAL}) END),"
    " MAX(occurred_at)"
    f" FROM events WHERE type IN ('{_SERVED}', '{_SERVED_SUMMARY}', '{_FAILED}') AND model_id IS NOT NULL"
    " AND occurred_at >= ? GROUP BY model_id, connection_id ORDER BY model_id, connection_id"
)
_RUNGS = (
    f"SELECT rung, SUM(CASE WHEN type = '{_ATTEMPTED}' THEN 1 ELSE 0 END),"
    f" SUM(CASE WHEN type = '{_SUCCEEDED}' THEN 1 ELSE 0 END) FROM events"
    f" WHERE stream LIKE 'connection/%' AND type IN ('{_ATTEMPTED}', '{_SUCCEEDED}')"
    " AND rung IS NOT NULL AND occurred_at >= ? GROUP BY rung"
)
_RECOVERED = (
    "SELECT rung, latency_ms FROM events WHERE stream LIKE 'connection/%'"
    f" AND type = '{_COMPLETED}' AND occurred_at >= ? ORDER BY latency_ms"
)
_RECENT_ERRORS = (
    f"SELECT occurred_at, connection_id, model_id, error_kind, outcome FROM events WHERE type = '{_FAILED}'"
    " AND occurred_at >= ? ORDER BY position DESC LIMIT 10"
)
# Incidents: recoveries the ladder started (one incident id each, resumed ones included once),
# those that ended healthy, and those that ended in quarantine.
_INCIDENTS = (
    f"SELECT COUNT(DISTINCT CASE type WHEN '{_STARTED}' THEN incident_id END),"
    f" COUNT(DISTINCT CASE type WHEN '{_COMPLETED}' THEN incident_id END),"
    f" COUNT(DISTINCT CASE type WHEN '{_QUARANTINED}' THEN incident_id END)"
    " FROM events WHERE stream LIKE 'connection/%'"
    f" AND type IN ('{_STARTED}', '{_COMPLETED}', '{_QUARANTINED}') AND occurred_at >= ?"
)
# Per connection: failed attempts, incidents, incidents recovered, rung attempts.
_PER_CONNECTION = (
    f"SELECT connection_id, SUM(CASE WHEN type = '{_ATTEMPT_FAILED}' THEN 1 ELSE 0 END),"
    f" COUNT(DISTINCT CASE type WHEN '{_STARTED}' THEN incident_id END),"
    f" COUNT(DISTINCT CASE type WHEN '{_COMPLETED}' THEN incident_id END),"
    f" SUM(CASE WHEN type = '{_ATTEMPTED}' THEN 1 ELSE 0 END)"
    f" FROM events WHERE type IN ('{_ATTEMPT_FAILED}', '{_STARTED}', '{_COMPLETED}', '{_ATTEMPTED}')"
    " AND connection_id IS NOT NULL AND occurred_at >= ? GROUP BY connection_id"
)
_PSS_MB = (
    f"COALESCE(CAST(json_extract(payload, '$.pss_mb') AS {_REAL}),"
    f" CAST(json_extract(payload, '$.pss_bytes') AS {_REAL}) / 1048576.0)"
)
# Each browser's latest memory sample: the row at each connection's last position (SQL both
# SQLite and PostgreSQL take: no bare columns beside an aggregate).
_MEMORY = (
    f"SELECT e.connection_id, {_PSS_MB.replace('payload', 'e.payload')}, e.occurred_at, e.position"
    " FROM events AS e JOIN ("
    f"SELECT connection_id, MAX(position) AS last FROM events WHERE type = '{_SAMPLED}'"
    f" AND connection_id IS NOT NULL AND {_PSS_MB} IS NOT NULL AND occurred_at >= ?"
    " GROUP BY connection_id) AS latest ON e.position = latest.last"
)
# Requests served and failed, and the served ones' latency, per bucket of the latest hour.
_HISTORY = (
    # Whole milliseconds divided as integers: the same bucket on SQLite (whose CAST truncates)
    # and PostgreSQL (whose CAST rounds), to within half a millisecond at a bucket's edge.
    f"SELECT CAST(occurred_at * 1000 AS BIGINT) / {HISTORY_BUCKET_S * 1000} * {HISTORY_BUCKET_S} AS bucket,"
    f" SUM(CASE type WHEN '{_SERVED}' THEN 1"
    f" WHEN '{_SERVED_SUMMARY}' THEN CAST(json_extract(payload, '$.n') AS INTEGER)"
    " ELSE 0 END),"
    f" SUM(CASE WHEN type = '{_FAILED}' THEN 1 ELSE 0 END),"
    f" SUM(CASE type WHEN '{_SERVED}' THEN latency_ms"
    f" WHEN '{_SERVED_SUMMARY}' THEN CAST(json_extract(payload, '$.latency_ms_total') AS {_REAL}) END)"
    f" FROM events WHERE type IN ('{_SERVED}', '{_SERVED_SUMMARY}', '{_FAILED}') AND model_id IS NOT NULL"
    f" AND occurred_at >= ? GROUP BY bucket ORDER BY bucket DESC LIMIT {HISTORY_BUCKETS}"
)
_RUNG_ORDER = {"ping": 0, "reconnect": 1, "restart": 2}

# The model type each model was last placed as, then what its requests did on each browser:
# successes (summarised or single), failed attempts and the successes' total latency. Only the
# pool's stream is read, through the (stream, version) index.
_BROWSER_FIGURES = (
    "WITH placed AS (SELECT model_id, json_extract(payload, '$.model_type') AS model_type FROM events"
    " WHERE position IN (SELECT MAX(position) FROM events"
    f" WHERE stream = ? AND type = '{_MODEL_PLACED}' GROUP BY model_id))"
    " SELECT placed.model_type, events.browser,"
    f" SUM(CASE type WHEN '{_SERVED}' THEN 1 WHEN '{_SERVED_SUMMARY}'"
    " THEN CAST(json_extract(payload, '$.n') AS INTEGER) ELSE 0 END),"
    f" SUM(CASE WHEN type = '{_ATTEMPT_FAILED}' THEN 1 ELSE 0 END),"
    f" SUM(CASE type WHEN '{_SERVED}' THEN latency_ms WHEN '{_SERVED_SUMMARY}'"
    f" THEN CAST(json_extract(payload, '$.latency_ms_total') AS {_REAL}) ELSE 0 END)"
    " FROM events JOIN placed USING (model_id)"
    f" WHERE stream = ? AND type IN ('{_SERVED}', '{_SERVED_SUMMARY}', '{_ATTEMPT_FAILED}')"
    " AND browser IS NOT NULL AND placed.model_type IS NOT NULL AND occurred_at >= ?"
    " GROUP BY placed.model_type, events.browser"
)


@dataclass(frozen=True, slots=True)
class RequestCounts:
    """Requests of one model on one connection, as the log recorded them."""

    model_id: str
    connection_id: str | None
    browser: str | None
    served: int
    failed: int
    latency_ms_mean: float | None
    latency_ms_max: float | None
    last_at: float


@dataclass(frozen=True, slots=True)
class RungCounts:
    """Recovery attempts of one rung and how many succeeded."""

    rung: str
    attempts: int
    successes: int
    median_latency_ms: float | None


@dataclass(frozen=True, slots=True)
class IncidentCounts:
    """Recoveries as incidents: started, ended healthy, ended in quarantine (the rest are open or
    were cut short by a close)."""

    started: int = 0
    recovered: int = 0
    quarantined: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionCounts:
    """What the log holds of one connection: failed attempts, incidents, rung attempts, memory."""

    connection_id: str
    failed_attempts: int = 0
    incidents: int = 0
    recovered: int = 0
    rung_attempts: int = 0
    pss_mb: float | None = None
    pss_at: float | None = None


@dataclass(frozen=True, slots=True)
class HistoryBucket:
    """Requests in one bucket of ``HISTORY_BUCKET_S`` seconds starting at ``start``."""

    start: float
    served: int
    failed: int
    latency_ms_mean: float | None


@dataclass(frozen=True, slots=True)
class LogCounts:
    """Everything telemetry counts from the log."""

    requests: list[RequestCounts]
    rungs: list[RungCounts]
    recent_errors: list[tuple[Any, ...]]  # (occurred_at, connection_id, model_id, error_kind, outcome)
    incidents: IncidentCounts = IncidentCounts()
    connections: dict[str, ConnectionCounts] = field(default_factory=dict)
    history: list[HistoryBucket] = field(default_factory=list)  # oldest first


_QUERIES = (_REQUESTS, _RUNGS, _RECOVERED, _RECENT_ERRORS, _INCIDENTS, _PER_CONNECTION, _MEMORY, _HISTORY)

# Each query reads the events it counts through one condition on their time, where a selection
# of streams (one pool's, of a log several pools share) is added.
_SINCE = "occurred_at >= ?"
if any(sql.count(_SINCE) != 1 or sql.count("?") != 1 for sql in _QUERIES):
    raise RuntimeError("every telemetry query takes one parameter, in its one time condition")


COUNTED_FAMILIES = ("pool/", "connection/")
"""The stream families whose events the counts read (breakers are restored, not counted)."""


def owned_streams(found: Iterable[str], name: str) -> list[str]:
    """Of the streams ``found``, those of the pool called ``name``
    (:func:`~poolwarden.pool_streams.pool_of`), with its own ``pool/<name>`` streams whether
    found or not (a pool's events may be counted before its stream is in the log)."""
    own = PoolStreams(name)
    return sorted(
        {stream for stream in found if pool_of(stream) == name} | {own.pool, own.bridge, own.memory}
    )


async def counted_streams(store: EventStore) -> list[str]:
    """Every stream of the families the counts read (:data:`COUNTED_FAMILIES`), each once."""
    return [stream for family in COUNTED_FAMILIES for stream in await store.streams(family)]


async def pool_counted_streams(store: EventStore, name: str) -> list[str]:
    """The streams of the pool called ``name`` that the counts read, as the log holds them now."""
    return owned_streams(await counted_streams(store), name)


def _scoped(sql: str, since: float, streams: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
    """``sql`` and its parameters, counting only the events of ``streams`` when given."""
    if streams is None:
        return sql, (since,)
    inside = f"stream IN ({', '.join('?' * len(streams))})" if streams else "1 = 0"
    return sql.replace(_SINCE, f"{_SINCE} AND {inside}"), (since, *streams)


def _shape(
    requests: Sequence[Sequence[Any]],
    rungs: Sequence[Sequence[Any]],
    recovered: Sequence[Sequence[Any]],
    errors: Sequence[Sequence[Any]],
    incidents: Sequence[Sequence[Any]],
    per_connection: Sequence[Sequence[Any]],
    memory: Sequence[Sequence[Any]],
    history: Sequence[Sequence[Any]],
) -> LogCounts:
    latencies: dict[str, list[float]] = {}
    for rung, latency in recovered:
        latencies.setdefault(rung, []).append(latency)
    rung_counts = []
    for rung, attempts, successes in rungs:
        values = latencies.get(rung, [])
        median = values[len(values) // 2] if values else None
        rung_counts.append(RungCounts(rung, int(attempts or 0), int(successes or 0), median))
    started, ended_healthy, quarantined = incidents[0] if incidents else (0, 0, 0)
    connections = {
        str(cid): ConnectionCounts(str(cid), int(f or 0), int(i or 0), int(r or 0), int(a or 0))
        for cid, f, i, r, a in per_connection
    }
    for cid, pss, at, _ in memory:
        base = connections.get(str(cid), ConnectionCounts(str(cid)))
        connections[str(cid)] = ConnectionCounts(
            base.connection_id,
            base.failed_attempts,
            base.incidents,
            base.recovered,
            base.rung_attempts,
            float(pss),
            float(at),
        )
    return LogCounts(
        requests=[_request_counts(row) for row in requests],
        rungs=sorted(rung_counts, key=lambda c: _RUNG_ORDER.get(c.rung, 9)),
        recent_errors=[tuple(row) for row in errors],
        incidents=IncidentCounts(int(started or 0), int(ended_healthy or 0), int(quarantined or 0)),
        connections=dict(sorted(connections.items())),
        history=[
            HistoryBucket(
                float(start),
                int(ok or 0),
                int(bad or 0),
                (total / int(ok)) if ok and total is not None else None,
            )
            for start, ok, bad, total in reversed(history)
        ],
    )


def _request_counts(row: Sequence[Any]) -> RequestCounts:
    model_id, connection_id, browser, served, failed, latency_total, latency_max, last_at = row
    served = int(served or 0)
    mean = latency_total / served if served and latency_total is not None else None
    return RequestCounts(
        model_id, connection_id, browser, served, int(failed or 0), mean, latency_max, float(last_at)
    )


@dataclass(frozen=True, slots=True)
class BrowserFigures:
    """What requests of one model type did on one browser, as the log recorded them."""

    model_type: str
    browser: str
    successes: int
    failed_attempts: int
    latency_ms_total: float


async def browser_figures(
    store: EventStore, since: float = 0.0, stream: str = "pool/main"
) -> list[BrowserFigures]:
    """Successes, failed attempts and latency by (model type, browser) since ``since``: what
    placement weighs, read back from the pool's log when a pool starts."""
    rows = await store.fetch(_BROWSER_FIGURES, (stream, stream, since))
    return [
        BrowserFigures(str(kind), str(browser), int(ok or 0), int(failed or 0), float(latency or 0.0))
        for kind, browser, ok, failed, latency in rows
    ]


async def log_counts(
    store: EventStore, since: float = 0.0, *, streams: Sequence[str] | None = None
) -> LogCounts:
    """Requests by (model, connection), recovery rungs and the newest errors since ``since``;
    with ``streams``, of the events of those streams only (a pool's: ``pool/<name>`` and under,
    its connections' lifecycles; telemetry counts nothing of breaker streams)."""
    return _shape(*[await store.fetch(*_scoped(sql, since, streams)) for sql in _QUERIES])


_COLUMNS = (
    "position, stream, version, type, occurred_at, payload, incident_id, connection_id, model_id, browser,"
    " error_kind, rung, outcome, latency_ms"
)


def _add_unrecorded(raw: sqlite3.Connection, stream: str, version: int, events: Sequence[NewEvent]) -> None:
    """Have the queries below see ``events`` (of ``stream``) as if the log held them already: a
    temporary view named ``events`` (the temp schema is searched before the file's) adds them to
    the file's rows, after its last position."""
    raw.execute(f"CREATE TEMP TABLE unrecorded AS SELECT {_COLUMNS} FROM main.events WHERE 0")
    head = raw.execute("SELECT COALESCE(MAX(position), 0) FROM main.events").fetchone()[0]
    raw.executemany(
        f"INSERT INTO temp.unrecorded ({_COLUMNS}) VALUES ({', '.join('?' * 14)})",
        [
            (
                head + i,
                stream,
                version + i,
                e.type,
                e.occurred_at,
                json.dumps(dict(e.payload), separators=(",", ":")),
                e.incident_id,
                e.connection_id,
                e.model_id,
                e.browser,
                e.error_kind,
                e.rung,
                e.outcome,
                e.latency_ms,
            )
            for i, e in enumerate(events, start=1)
        ],
    )
    raw.execute(
        f"CREATE TEMP VIEW events AS SELECT {_COLUMNS} FROM main.events"
        f" UNION ALL SELECT {_COLUMNS} FROM temp.unrecorded"
    )


def log_counts_sync(
    path: str | Path,
    since: float = 0.0,
    *,
    stream: str | None = None,
    unrecorded: Callable[[int], Sequence[NewEvent]] | None = None,
    pool: str | None = None,
) -> LogCounts:
    """:func:`log_counts` on a read-only sqlite3 connection to the file at ``path`` (blocking).

    A running pool appends its events a little after it records them (its successes about once
    a second). With ``unrecorded``, the counts include them: it is called with the version
    ``stream`` (the pool's) stands at in the file, read in the same transaction as the counts,
    and returns the pool's events the file does not hold yet (``ResourcePool.unrecorded``).
    With ``pool``, only the events of the pool of that name are counted (a log several pools
    share holds the others' too).
    """
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as raw:
        raw.execute("PRAGMA busy_timeout = 5000")
        raw.execute("BEGIN")  # one snapshot for the version and every count
        if unrecorded is not None and stream is not None:
            version = raw.execute(
                "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?", (stream,)
            ).fetchone()[0]
            _add_unrecorded(raw, stream, int(version), unrecorded(int(version)))
        streams = None
        if pool is not None:
            found = [
                row[0]
                for family in COUNTED_FAMILIES
                for row in raw.execute(
                    "SELECT DISTINCT stream FROM events WHERE stream >= ? AND stream < ?",
                    (family, family + "\U0010ffff"),
                )
            ]
            streams = owned_streams(found, pool)
        return _shape(*[raw.execute(*_scoped(sql, since, streams)).fetchall() for sql in _QUERIES])
