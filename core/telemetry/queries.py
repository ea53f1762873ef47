"""Aggregates over the event log that telemetry needs, as SQL on the indexed columns.

Each query is written once, as SQL plus a function that shapes its rows, and runs either through
an open :class:`~poolwarden.storage.EventStore` (``await log_counts(store)``) or on a plain
read-only ``sqlite3`` connection (``log_counts_sync(path)``, for the seed's synchronous
``export_telemetry``). The columns (model_id, connection_id, outcome, rung, latency_ms) hold
what is counted; only the pool's summaries of successful requests (``InferencesServed``, one
per connection, model and batch) are looked into, for their count and latency totals.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poolwarden.lifecycle_events import RecoveryCompleted, RungAttempted, RungSucceeded
from poolwarden.pool_events import (
    AttemptFailed,
    InferenceFailed,
    InferenceServed,
    InferencesServed,
    ModelPlaced,
)
from poolwarden.storage import EventStore

__all__ = [
    "BrowserFigures",
    "LogCounts",
    "RequestCounts",
    "RungCounts",
    "browser_figures",
    "log_counts",
    "log_counts_sync",
]

# The type names, from the event classes.
_SERVED, _SERVED_SUMMARY, _FAILED = InferenceServed.TYPE, InferencesServed.TYPE, InferenceFailed.TYPE
_ATTEMPT_FAILED, _MODEL_PLACED = AttemptFailed.TYPE, ModelPlaced.TYPE
_ATTEMPTED, _SUCCEEDED, _RECOVERED = RungAttempted.TYPE, RungSucceeded.TYPE, RecoveryCompleted.TYPE

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
    f" AND type = '{_RECOVERED}' AND occurred_at >= ? ORDER BY latency_ms"
)
_RECENT_ERRORS = (
    f"SELECT occurred_at, connection_id, model_id, error_kind, outcome FROM events WHERE type = '{_FAILED}'"
    " AND occurred_at >= ? ORDER BY position DESC LIMIT 10"
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
class LogCounts:
    """Everything telemetry counts from the log."""

    requests: list[RequestCounts]
    rungs: list[RungCounts]
    recent_errors: list[tuple[Any, ...]]  # (occurred_at, connection_id, model_id, error_kind, outcome)


def _shape(
    requests: Sequence[Sequence[Any]],
    rungs: Sequence[Sequence[Any]],
    recovered: Sequence[Sequence[Any]],
    errors: Sequence[Sequence[Any]],
) -> LogCounts:
    latencies: dict[str, list[float]] = {}
    for rung, latency in recovered:
        latencies.setdefault(rung, []).append(latency)
    rung_counts = []
    for rung, attempts, successes in rungs:
        values = latencies.get(rung, [])
        median = values[len(values) // 2] if values else None
        rung_counts.append(RungCounts(rung, int(attempts or 0), int(successes or 0), median))
    return LogCounts(
        requests=[_request_counts(row) for row in requests],
        rungs=sorted(rung_counts, key=lambda c: _RUNG_ORDER.get(c.rung, 9)),
        recent_errors=[tuple(row) for row in errors],
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


async def log_counts(store: EventStore, since: float = 0.0) -> LogCounts:
    """Requests by (model, connection), recovery rungs and the newest errors since ``since``."""
    params = (since,)
    return _shape(
        await store.fetch(_REQUESTS, params),
        await store.fetch(_RUNGS, params),
        await store.fetch(_RECOVERED, params),
        await store.fetch(_RECENT_ERRORS, params),
    )


def log_counts_sync(path: str | Path, since: float = 0.0) -> LogCounts:
    """:func:`log_counts` on a read-only sqlite3 connection to the file at ``path`` (blocking)."""
    params = (since,)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as raw:
        raw.execute("PRAGMA busy_timeout = 5000")
        return _shape(
            raw.execute(_REQUESTS, params).fetchall(),
            raw.execute(_RUNGS, params).fetchall(),
            raw.execute(_RECOVERED, params).fetchall(),
            raw.execute(_RECENT_ERRORS, params).fetchall(),
        )
