"""A telemetry snapshot as Prometheus metric families (this module needs ``prometheus_client``).

Only :mod:`poolwarden.telemetry.prometheus` imports it, lazily, so that a missing optional dependency
becomes a typed error there. Nothing here reads the pool: :class:`SnapshotCollector` renders
whatever snapshot it was last handed, so prometheus_client's HTTP thread may call ``collect()``
at any moment without touching the pool's asyncio state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from poolwarden.breaker import BreakerState
from poolwarden.memory import PressureLevel
from poolwarden.telemetry.snapshot import MetricsSnapshot

__all__ = ["SnapshotCollector", "families"]

_MB = 2**20
_CONNECTION_STATUSES = ("healthy", "degraded", "unhealthy", "closed")


class SnapshotCollector(Collector):
    """Yields the metric families of the last snapshot it was given (none before the first)."""

    def __init__(self) -> None:
        self.snapshot: MetricsSnapshot | None = None  # replaced whole, never mutated: safe across threads

    def collect(self) -> Iterator[Metric]:
        """The families of the current snapshot; called from prometheus_client's thread."""
        snapshot = self.snapshot
        if snapshot is not None:
            yield from families(snapshot)


def families(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    """Every metric family of ``snapshot``: connections, breakers, requests, recovery, host."""
    telemetry = snapshot.telemetry
    yield _gauge("poolwarden_telemetry_timestamp_seconds", "When this snapshot was taken.", snapshot.taken_at)
    yield from _connections(telemetry["connections"])
    yield from _breakers(telemetry["circuit_breaker"], snapshot.breakers)
    yield _gauge("poolwarden_models", "Models known to the pool.", telemetry["models"])
    yield from _requests(snapshot)
    yield from _recovery(snapshot)
    if "system" in telemetry:
        yield from _system(telemetry["system"])


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(name: str, documentation: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _connections(connections: Mapping[str, Any]) -> Iterator[Metric]:
    statuses = {s: connections[s] for s in _CONNECTION_STATUSES if s in connections}
    yield _labelled("poolwarden_connections", "Connections by health status.", "status", statuses)
    if "busy" in connections:
        busy = connections["busy"]
        yield _gauge("poolwarden_connections_busy", "Connections with requests in flight.", busy)
    browsers = connections.get("browser_distribution", {})
    yield _labelled("poolwarden_connections_by_browser", "Connections by browser.", "browser", browsers)
    if "platform_distribution" in connections:
        platforms = connections["platform_distribution"]
        yield _labelled(
            "poolwarden_connections_by_backend", "Connections by the backend they run.", "backend", platforms
        )


def _breakers(counts: Mapping[str, int], breakers: tuple[tuple[str, str], ...]) -> Iterator[Metric]:
    yield _labelled(
        "poolwarden_circuit_breakers",
        "Connection breakers by state (open includes forced_open; closed includes disabled, metrics_only).",
        "state",
        counts,
    )
    # One series per (breaker, possible state), 1 for the one it is in: an absent series
    # would read as "no data", not as "not in that state".
    family = GaugeMetricFamily(
        "poolwarden_circuit_breaker_state",
        "1 for the state each breaker is in, else 0.",
        labels=["key", "state"],
    )
    for key, current in breakers:
        for state in BreakerState:
            family.add_metric([key, state.value], 1.0 if state.value == current else 0.0)
    yield family


def _requests(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    labels = ["model", "connection"]
    requests = CounterMetricFamily(
        "poolwarden_inference_requests",
        "Inference requests by model, connection and outcome, as the log recorded them.",
        labels=[*labels, "outcome"],
    )
    latency = SummaryMetricFamily(
        "poolwarden_inference_latency_seconds",
        "Latency of served requests (sum over count is the mean).",
        labels=labels,
    )
    latency_max = GaugeMetricFamily(
        "poolwarden_inference_latency_max_seconds", "Slowest served request.", labels=labels
    )
    for row in snapshot.counts.requests:
        where = [row.model_id, row.connection_id or ""]
        requests.add_metric([*where, "served"], row.served)
        requests.add_metric([*where, "failed"], row.failed)
        if row.latency_ms_mean is not None:
            latency.add_metric(where, row.served, row.latency_ms_mean * row.served / 1000)
        if row.latency_ms_max is not None:
            latency_max.add_metric(where, row.latency_ms_max / 1000)
    yield from (requests, latency, latency_max)


def _recovery(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    attempts = CounterMetricFamily(
        "poolwarden_recovery_attempts", "Recovery rungs attempted, by rung.", labels=["rung"]
    )
    successes = CounterMetricFamily(
        "poolwarden_recovery_successes", "Recovery rungs that succeeded, by rung.", labels=["rung"]
    )
    median = GaugeMetricFamily(
        "poolwarden_recovery_time_median_seconds", "Median time to recover, by rung.", labels=["rung"]
    )
    for rung in snapshot.counts.rungs:
        attempts.add_metric([rung.rung], rung.attempts)
        successes.add_metric([rung.rung], rung.successes)
        if rung.median_latency_ms is not None:
            median.add_metric([rung.rung], rung.median_latency_ms / 1000)
    incidents = CounterMetricFamily(
        "poolwarden_recovery_incidents",
        "Recovery incidents: started, and ended recovered or quarantined (one may take several rungs).",
        labels=["outcome"],
    )
    counted = snapshot.counts.incidents
    for outcome, value in (
        ("started", counted.started),
        ("recovered", counted.recovered),
        ("quarantined", counted.quarantined),
    ):
        incidents.add_metric([outcome], value)
    yield from (attempts, successes, median, incidents)


def _system(system: Mapping[str, Any]) -> Iterator[Metric]:
    memory = system["memory"]
    pressure = str(system["memory_pressure"])
    yield _labelled(
        "poolwarden_memory_pressure",
        "1 for the host memory pressure level the pool acts on, else 0.",
        "level",
        {level.value: 1.0 if level.value == pressure else 0.0 for level in PressureLevel},
    )
    yield _gauge("poolwarden_host_memory_used_ratio", "Share of host memory in use.", memory["percent"] / 100)
    yield _gauge(
        "poolwarden_host_memory_available_bytes", "Host memory available.", memory["available_mb"] * _MB
    )
    yield _gauge("poolwarden_host_memory_total_bytes", "Host memory in all.", memory["total_mb"] * _MB)
    yield _gauge("poolwarden_host_cpu_used_ratio", "Share of host CPU in use.", system["cpu_percent"] / 100)
    if system.get("cpu_count") is not None:
        yield _gauge("poolwarden_host_cpus", "Logical CPUs of the host.", system["cpu_count"])
