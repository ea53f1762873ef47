"""Aggregates over the event log that telemetry needs, as SQL on the indexed columns.

Each takes an open :class:`~poolwarden.storage.SQLiteEventStore` and never parses JSON: the
columns (model_id, connection_id, outcome, rung, latency_ms) hold what is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from poolwarden.storage.sqlite import SQLiteEventStore

__all__ = ["RequestCounts", "RungCounts", "recovery_counts", "request_counts"]

SERVED = "InferenceServed"
FAILED = "InferenceFailed"


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


async def request_counts(store: SQLiteEventStore, since: float | None = None) -> list[RequestCounts]:
    """Served and failed requests by (model, connection) since ``since`` (epoch seconds)."""
    rows = await store.fetch(
        "SELECT model_id, connection_id, MAX(browser),"
        f" SUM(type = '{SERVED}'), SUM(type = '{FAILED}'),"
        f" AVG(CASE WHEN type = '{SERVED}' THEN latency_ms END),"
        f" MAX(CASE WHEN type = '{SERVED}' THEN latency_ms END), MAX(occurred_at)"
        f" FROM events WHERE type IN ('{SERVED}', '{FAILED}') AND model_id IS NOT NULL"
        " AND occurred_at >= ? GROUP BY model_id, connection_id ORDER BY model_id, connection_id",
        (since if since is not None else 0.0,),
    )
    return [
        RequestCounts(r[0], r[1], r[2], int(r[3] or 0), int(r[4] or 0), r[5], r[6], float(r[7])) for r in rows
    ]


async def recovery_counts(store: SQLiteEventStore, since: float | None = None) -> list[RungCounts]:
    """Attempts and successes of each recovery rung since ``since``, from the lifecycle events."""
    rows = await store.fetch(
        "SELECT rung, SUM(type = 'RungAttempted'), SUM(type = 'RungSucceeded') FROM events"
        " WHERE stream LIKE 'connection/%' AND type IN ('RungAttempted', 'RungSucceeded')"
        " AND rung IS NOT NULL AND occurred_at >= ? GROUP BY rung",
        (since if since is not None else 0.0,),
    )
    latencies: dict[str, list[float]] = {}
    for rung, latency in await store.fetch(
        "SELECT rung, latency_ms FROM events WHERE stream LIKE 'connection/%' AND type = 'RecoveryCompleted'"
        " AND occurred_at >= ? ORDER BY latency_ms",
        (since if since is not None else 0.0,),
    ):
        latencies.setdefault(rung, []).append(latency)
    result = []
    for rung, attempts, successes in rows:
        values = latencies.get(rung, [])
        median = values[len(values) // 2] if values else None
        result.append(RungCounts(rung, int(attempts or 0), int(successes or 0), median))
    order = {"ping": 0, "reconnect": 1, "restart": 2}
    return sorted(result, key=lambda c: order.get(c.rung, 9))
