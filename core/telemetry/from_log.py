"""Command-line tools over a pool and its log: telemetry from a log, and the ladder on trial.

``telemetry_from_log`` answers the seed's ``--export-telemetry`` for a log whose pool is not
running: connection states are the last states the lifecycles recorded, breaker states are
restored from their streams, and every count is a query. On a log several pools share (a
fleet's), it counts them all and adds a ``pools`` section, the main figures of each pool; with
``pool=NAME`` it counts that pool's streams only (:func:`poolwarden.pool_streams.pool_of`).
``test_recovery`` starts a pool, injects one fault and reports the incident the ladder ran, rung
by rung.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from poolwarden.breaker_events import STREAM_PREFIX
from poolwarden.pool_events import PoolStopped
from poolwarden.pool_streams import PoolStreams, pool_of
from poolwarden.storage import EventStore, open_store
from poolwarden.telemetry.breakers import BreakerStatus, breaker_statuses
from poolwarden.telemetry.live import by_model, connection_figures, log_sections, model_metrics
from poolwarden.telemetry.queries import LogCounts, counted_streams, log_counts, owned_streams

__all__ = ["POOL_SECTIONS", "LogReading", "log_telemetry", "read_fleet", "read_log", "telemetry_from_log"]

POOL_SECTIONS = ("connections", "circuit_breaker", "models", "requests", "recovery")
"""The sections of the telemetry that the fleet view's ``pools`` section gives for each pool."""


@dataclass(frozen=True, slots=True)
class LogReading:
    """What the log says of a pool that need not be running: breakers, connections, counts."""

    statuses: list[BreakerStatus]
    connections: list[tuple[Any, ...]]  # (stream, last to_state, browser, occurred_at)
    counts: LogCounts
    stopped: list[tuple[Any, ...]] = field(default_factory=list)  # (stream, occurred_at, payload)
    pool: str | None = None  # the pool read, or None for the whole log


async def _reading(
    store: EventStore, statuses: list[BreakerStatus], pool: str | None, streams: list[str]
) -> LogReading:
    """What the log says of the pool named ``pool`` (its streams by :func:`pool_of`), or of the
    whole log for ``None``; ``statuses`` are every breaker's, ``streams`` every counted stream."""
    if pool is not None:
        owner = PoolStreams(pool)
        statuses = [status for status in statuses if owner.owns(STREAM_PREFIX + status.key)]
    connections = await store.fetch(
        "SELECT e.stream, e.to_state, e.browser, e.occurred_at FROM events e"
        " WHERE e.stream LIKE 'connection/%' AND e.to_state IS NOT NULL AND e.position ="
        " (SELECT MAX(position) FROM events WHERE stream = e.stream AND to_state IS NOT NULL)"
    )
    counts = await log_counts(store, streams=None if pool is None else owned_streams(streams, pool))
    stopped = await store.fetch(
        "SELECT e.stream, e.occurred_at, e.payload FROM events e WHERE e.type = ? AND e.position ="
        " (SELECT MAX(position) FROM events WHERE stream = e.stream AND type = e.type) ORDER BY e.stream",
        (PoolStopped.TYPE,),
    )
    return LogReading(
        statuses,
        [tuple(row) for row in connections if pool is None or pool_of(row[0]) == pool],
        counts,
        [tuple(row) for row in stopped if pool is None or pool_of(row[0]) == pool],
        pool,
    )


async def read_log(db: str | os.PathLike[str], *, pool: str | None = None) -> LogReading:
    """Read the breakers' states, each connection's last state and the counts from the log
    (read-only); with ``pool``, of that pool's streams only."""
    if pool is not None:
        PoolStreams(pool)  # a ConfigurationError for a name no pool can have, before any reading
    statuses = await breaker_statuses(db)
    async with open_store(db, read_only=True) as store:
        streams = await counted_streams(store) if pool is not None else []
        return await _reading(store, statuses, pool, streams)


async def read_fleet(db: str | os.PathLike[str]) -> tuple[LogReading, dict[str, LogReading]]:
    """The reading of the whole log, and of each pool that wrote to it (by name; a pool is in the
    log when one of its streams or breakers is)."""
    statuses = await breaker_statuses(db)
    async with open_store(db, read_only=True) as store:
        streams = await counted_streams(store)
        owners = (pool_of(s) for s in (*streams, *(STREAM_PREFIX + status.key for status in statuses)))
        names = sorted({name for name in owners if name is not None})
        whole = await _reading(store, statuses, None, streams)
        return whole, {name: await _reading(store, statuses, name, streams) for name in names}


async def telemetry_from_log(
    db: str | os.PathLike[str], *, detailed: bool = False, pool: str | None = None
) -> dict[str, Any]:
    """The seed's telemetry keys, from the log alone (its pool need not be running).

    With ``pool``, of the pool of that name only (a fleet's log holds several). Without, of the
    whole log, with a ``pools`` section: for each pool, by name, its :data:`POOL_SECTIONS`."""
    if pool is not None:
        return log_telemetry(await read_log(db, pool=pool), db, detailed=detailed)
    whole, pools = await read_fleet(db)
    telemetry = log_telemetry(whole, db, detailed=detailed)
    telemetry["pools"] = {}
    for name, reading in pools.items():
        figures = log_telemetry(reading, db)
        telemetry["pools"][name] = {section: figures[section] for section in POOL_SECTIONS}
    return telemetry


def log_telemetry(
    reading: LogReading, db: str | os.PathLike[str], *, detailed: bool = False
) -> dict[str, Any]:
    """The seed's telemetry keys from a :class:`LogReading` of the log at ``db``."""
    statuses, connections, counts = reading.statuses, reading.connections, reading.counts
    requests = counts.requests
    states = Counter(state for _, state, _, _ in connections)
    connection_breakers = [s for s in statuses if "/" not in s.key]
    breaker_states = Counter(s.effective_state for s in connection_breakers)
    now = datetime.now(tz=UTC).isoformat()
    telemetry: dict[str, Any] = {
        "timestamp": now,
        "datetime": now,
        "source": {"db": str(db), "live": False, **({"pool": reading.pool} if reading.pool else {})},
        "connections": {
            "total": len(connections),
            "healthy": states["healthy"],
            "degraded": states["pinging"] + states["reconnecting"] + states["draining"],
            "unhealthy": states["restarting"] + states["failed"] + states["starting"],
            "closed": states["closed"],
            "browser_distribution": dict(Counter(browser for _, _, browser, _ in connections)),
        },
        "circuit_breaker": {
            "open": breaker_states["open"] + breaker_states["forced_open"],
            "half_open": breaker_states["half_open"],
            "closed": breaker_states["closed"] + breaker_states["disabled"] + breaker_states["metrics_only"],
        },
        "models": len({r.model_id for r in requests}),
        # A run's counters live in its process; a pool that stopped wrote them in PoolStopped.
        "stats": {
            str(stream).removeprefix("pool/"): {
                "stopped_at": datetime.fromtimestamp(at, tz=UTC).isoformat(),
                **json.loads(payload),
            }
            for stream, at, payload in reading.stopped
        },
        **log_sections(counts),
    }
    if detailed:
        telemetry["connection_details"] = [
            {
                "connection_id": stream.removeprefix("connection/"),
                "state": state,
                "browser": browser,
                "since": datetime.fromtimestamp(at, tz=UTC).isoformat(),
                **connection_figures(counts.connections.get(stream.removeprefix("connection/"))),
            }
            for stream, state, browser, at in connections
        ]
        telemetry["breaker_details"] = [s.as_dict() for s in statuses]
        details: dict[str, Any] = {}
        for model_id, rows in sorted(by_model(requests).items()):
            latest = max(rows, key=lambda r: r.last_at)  # where the model was used last
            details[model_id] = {
                "connection_id": latest.connection_id,
                "browser": latest.browser,
                "metrics": model_metrics(rows),
            }
        telemetry["model_details"] = details
    return telemetry
