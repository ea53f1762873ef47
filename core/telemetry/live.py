"""Telemetry of a pool: the seed's keys, with the figures counted from the event log.

Live state (which connection is healthy, which breaker open) comes from the pool; every count
(requests, successes, failures, latencies, recoveries by rung, recent errors) is a query over
the log, so it agrees with a post-mortem of the same file. The seed's bugs are fixed: half-open
breakers are counted, and recent errors are the newest, not the oldest.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from poolwarden.breaker import BreakerState
from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.lifecycle_types import ConnectionState
from poolwarden.memory import MemoryGovernor
from poolwarden.pool_streams import PoolStreams
from poolwarden.storage.base import EventStore
from poolwarden.telemetry.queries import (
    HISTORY_BUCKET_S,
    ConnectionCounts,
    LogCounts,
    RequestCounts,
    log_counts,
    pool_counted_streams,
)

__all__ = [
    "MemberView",
    "PoolView",
    "build_telemetry",
    "connection_figures",
    "export_telemetry",
    "log_sections",
    "pool_health",
    "read_figures",
    "system_figures",
]


class MemberView(Protocol):
    """What telemetry reads of a pool's connection (``poolwarden.pool.member.MemberView`` is one)."""

    @property
    def connection_id(self) -> str: ...
    @property
    def browser(self) -> str: ...
    @property
    def state(self) -> ConnectionState: ...
    @property
    def draining(self) -> bool: ...
    @property
    def busy(self) -> bool: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def jobs(self) -> int: ...
    @property
    def started_at(self) -> float: ...
    @property
    def models(self) -> Mapping[str, object]: ...
    @property
    def connection(self) -> object: ...


class PoolView(Protocol):
    """What telemetry reads of a running pool (``poolwarden.pool.PoolView`` is one).

    Telemetry sits below the pool: the pool serves its own metrics, so telemetry names only
    what it reads, and the pool satisfies it.
    """

    @property
    def store(self) -> EventStore: ...
    @property
    def registry(self) -> BreakerRegistry: ...
    @property
    def governor(self) -> MemoryGovernor: ...
    @property
    def members(self) -> Mapping[str, MemberView]: ...
    @property
    def model_connections(self) -> Mapping[str, str]: ...
    @property
    def counters(self) -> Mapping[str, int]: ...
    @property
    def streams(self) -> PoolStreams: ...
    async def flush(self) -> None: ...


_DEGRADED = (ConnectionState.PINGING, ConnectionState.RECONNECTING, ConnectionState.DRAINING)


def system_figures(pressure: str) -> dict[str, Any]:
    """CPU and memory of the host (blocking: call it in a thread)."""
    import psutil

    memory = psutil.virtual_memory()
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count(),
        "memory": {
            "percent": memory.percent,
            "available_mb": round(memory.available / 2**20, 1),
            "total_mb": round(memory.total / 2**20, 1),
        },
        "memory_pressure": pressure,
    }


async def export_telemetry(
    pool: PoolView, include_connections: bool = False, include_models: bool = False
) -> dict[str, Any]:
    """The pool's telemetry (see :func:`build_telemetry`), its counts queried from the log."""
    counts, system = await read_figures(pool)
    return build_telemetry(pool, counts, system, include_connections, include_models)


async def read_figures(pool: PoolView) -> tuple[LogCounts, dict[str, Any]]:
    """What telemetry counts: the log's counts (after a flush) and the host's figures (in a thread)."""
    store = pool.store
    await pool.flush()  # what the pool has decided so far is in the log before it is counted
    # The pool's own events only: a log several pools share (a fleet's) holds the others' too.
    counts = await log_counts(store, streams=await pool_counted_streams(store, pool.streams.name))
    system = await asyncio.to_thread(system_figures, pool.governor.level.value)
    return counts, system


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat()


def log_sections(counts: LogCounts) -> dict[str, Any]:
    """The telemetry sections counted from the log alone: requests, recovery, performance
    history, recent errors.

    ``recovery`` counts two things: incidents (one per recovery the ladder ran, however many
    rungs it took; ``success_rate`` is the share of the ended ones that ended healthy), and rung
    attempts (``attempts``, ``successes``, ``attempt_success_rate``, and per rung in ``by_rung``):
    one incident whose ping failed and whose reconnect worked is 1 of 1 recovered, and 1 of 2
    attempts.
    """
    requests, rungs, incidents = counts.requests, counts.rungs, counts.incidents
    attempts = sum(r.attempts for r in rungs)
    successes = sum(r.successes for r in rungs)
    ended = incidents.recovered + incidents.quarantined
    return {
        "requests": {
            "total": sum(r.served + r.failed for r in requests),
            "served": sum(r.served for r in requests),
            "failed": sum(r.failed for r in requests),
        },
        "recovery": {
            "incidents": incidents.started,
            "recovered": incidents.recovered,
            "quarantined": incidents.quarantined,
            "success_rate": incidents.recovered / ended if ended else None,
            "attempts": attempts,
            "successes": successes,
            "attempt_success_rate": successes / attempts if attempts else None,
            "by_rung": {
                r.rung: {
                    "attempts": r.attempts,
                    "successes": r.successes,
                    "success_rate": r.successes / r.attempts if r.attempts else None,
                    "median_time_to_recover_ms": r.median_latency_ms,
                }
                for r in rungs
            },
        },
        "performance_history": [
            {
                "start": _iso(bucket.start),
                "seconds": HISTORY_BUCKET_S,
                "served": bucket.served,
                "failed": bucket.failed,
                "average_latency_ms": bucket.latency_ms_mean,
            }
            for bucket in counts.history
        ],
        "recent_errors": [
            {
                "at": _iso(at),
                "connection_id": connection_id,
                "model_id": model_id,
                "error_kind": kind,
                "outcome": outcome,
            }
            for at, connection_id, model_id, kind, outcome in counts.recent_errors
        ],
    }


def _connection_class(member: MemberView) -> str:
    state = member.state
    if state is ConnectionState.HEALTHY and not member.draining:
        return "healthy"
    if state in _DEGRADED or member.draining:
        return "degraded"
    return "unhealthy"


def build_telemetry(
    pool: PoolView,
    counts: LogCounts,
    system: dict[str, Any],
    include_connections: bool,
    include_models: bool,
) -> dict[str, Any]:
    """Assemble the telemetry dictionary from the pool's live state and the log's counts."""
    members = list(pool.members.values())
    classes = Counter(_connection_class(m) for m in members)
    breaker_states = Counter(str(pool.registry.connection(m.connection_id).state) for m in members)
    now = datetime.now(tz=UTC).isoformat()
    telemetry: dict[str, Any] = {
        "timestamp": now,
        "datetime": now,
        "system": system,
        "connections": {
            "total": len(members),
            "healthy": classes["healthy"],
            "degraded": classes["degraded"],
            "unhealthy": classes["unhealthy"],
            "busy": sum(m.busy for m in members),
            "browser_distribution": dict(Counter(m.browser for m in members)),
            "platform_distribution": dict(Counter(_backend(m) for m in members)),
        },
        "circuit_breaker": {
            "open": breaker_states[BreakerState.OPEN] + breaker_states[BreakerState.FORCED_OPEN],
            "half_open": breaker_states[BreakerState.HALF_OPEN],
            "closed": breaker_states[BreakerState.CLOSED]
            + breaker_states[BreakerState.DISABLED]
            + breaker_states[BreakerState.METRICS_ONLY],
        },
        "models": len({m for member in members for m in member.models} | set(pool.model_connections)),
        "stats": dict(pool.counters),
        **log_sections(counts),
    }
    if include_connections:
        telemetry["connection_details"] = [
            {**_connection_details(pool, m), **connection_figures(counts.connections.get(m.connection_id))}
            for m in members
        ]
    if include_models:
        telemetry["model_details"] = _model_details(pool, counts.requests)
    return telemetry


def connection_figures(counts: ConnectionCounts | None) -> dict[str, Any]:
    """What the log holds of one connection: its latest memory sample, its failed attempts
    (``error_count``) and its recoveries (incidents, recovered, rung attempts)."""
    counts = counts or ConnectionCounts("")
    return {
        "memory_mb": round(counts.pss_mb, 1) if counts.pss_mb is not None else None,
        "memory_sampled_at": _iso(counts.pss_at) if counts.pss_at is not None else None,
        "error_count": counts.failed_attempts,
        "recovery": {
            "incidents": counts.incidents,
            "recovered": counts.recovered,
            "rung_attempts": counts.rung_attempts,
        },
    }


def pool_health(pool: PoolView) -> dict[str, Any]:
    """Readiness of a running pool now (call it on the pool's loop): ``ready`` while at least one
    connection serves (healthy, not draining, its connection breaker not open); ``status`` is
    ``ok`` when all do, ``degraded`` when some do, ``unavailable`` when none does. With the
    connections serving, the open breakers (connection and model) and the memory pressure level.
    """
    members = list(pool.members.values())
    open_states = (BreakerState.OPEN, BreakerState.FORCED_OPEN)
    serving = [
        m.connection_id
        for m in members
        if _connection_class(m) == "healthy"
        and pool.registry.connection(m.connection_id).state not in open_states
    ]
    open_breakers = sorted(b.key for b in pool.registry if b.state in open_states)
    if not serving:
        status = "unavailable"
    elif len(serving) < len(members) or open_breakers:
        status = "degraded"
    else:
        status = "ok"
    return {
        "status": status,
        "ready": bool(serving),
        "connections": {"total": len(members), "serving": len(serving), "serving_ids": sorted(serving)},
        "open_breakers": open_breakers,
        "memory_pressure": pool.governor.level.value,
        "checked_at": datetime.now(tz=UTC).isoformat(),
    }


def _backend(member: MemberView) -> str:
    hello = getattr(member.connection, "hello", None)
    return str(getattr(hello, "backend", None) or "unknown")


def _connection_details(pool: PoolView, member: MemberView) -> dict[str, Any]:
    breaker = pool.registry.connection(member.connection_id)
    return {
        "connection_id": member.connection_id,
        "browser": member.browser,
        "platform": _backend(member),
        "state": str(member.state.value),
        "status": _connection_class(member),
        "in_flight": member.in_flight,
        "jobs": member.jobs,
        "models": sorted(member.models),
        "circuit_breaker": {"state": str(breaker.state), "retry_at": breaker.retry_at},
        "started_at": member.started_at,
    }


def model_metrics(rows: list[RequestCounts]) -> dict[str, Any]:
    """The seed's per-model ``metrics`` from the log's counts of one model (one row a connection)."""
    served = sum(r.served for r in rows)
    failed = sum(r.failed for r in rows)
    latency_total = sum((r.latency_ms_mean or 0.0) * r.served for r in rows)
    return {
        "execution_count": served + failed,
        "success_count": served,
        "failure_count": failed,
        "success_rate": served / (served + failed) if served + failed else None,
        "average_latency_ms": latency_total / served if served else None,
        "max_latency_ms": max((r.latency_ms_max or 0.0 for r in rows), default=None),
        "last_used": max((r.last_at for r in rows), default=None),
        "by_connection": {
            str(r.connection_id): {"success_count": r.served, "failure_count": r.failed} for r in rows
        },
    }


def by_model(requests: list[RequestCounts]) -> dict[str, list[RequestCounts]]:
    """The log's request counts grouped by model."""
    grouped: dict[str, list[RequestCounts]] = {}
    for row in requests:
        grouped.setdefault(row.model_id, []).append(row)
    return grouped


def _model_details(pool: PoolView, requests: list[RequestCounts]) -> dict[str, Any]:
    grouped = by_model(requests)
    details: dict[str, Any] = {}
    for model_id in sorted(set(grouped) | set(pool.model_connections)):
        connection_id = pool.model_connections.get(model_id)
        member = pool.members.get(connection_id) if connection_id is not None else None
        details[model_id] = {
            "connection_id": connection_id,
            "browser": member.browser if member is not None else None,
            "platform": _backend(member) if member is not None else None,
            "metrics": model_metrics(grouped.get(model_id, [])),
        }
    return details
