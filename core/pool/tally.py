"""Successful requests, summarised: one event per (connection, model, backend) per batch.

A request served at its first attempt, on the connection its breakers chose, is the pool doing
its job; one row per such request would make the log's writer the most expensive part of serving
it. :class:`ServedTally` gathers them instead, and every time the pool's events are appended it
turns what gathered into one ``InferencesServed`` event per (connection, model, backend) with
the count and every latency, rounded to the microsecond: the exact distribution, without a row
per request. Requests that needed a retry, a panic route or a fallback are still one event each
(``InferenceServed``, ``FallbackServed``): they are what a post-mortem looks for.

``PoolConfig(record_every_request=True)`` records every success as its own ``InferenceServed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from poolwarden.clock import Clock
from poolwarden.codec import encode
from poolwarden.events import NewEvent
from poolwarden.pool_events import InferencesServed

__all__ = ["SERVED_SUMMARY", "SUMMARY_INTERVAL", "ServedTally"]

SERVED_SUMMARY = InferencesServed.TYPE
"""The summary's type name."""

SUMMARY_INTERVAL = 1.0
"""Seconds successes may gather before they are appended (sooner when another event is): each
append is a transaction, and one every 20 ms cost the pool a quarter of its throughput."""


@dataclass(slots=True)
class _Open:
    first_at: float
    last_at: float
    latencies: list[float] = field(default_factory=list)


class ServedTally:
    """Counts successes until :meth:`drain` turns them into summary events."""

    def __init__(self, *, clock: Clock) -> None:
        self.clock = clock
        self._open: dict[tuple[str, str, str, str], _Open] = {}

    def add(self, connection_id: str, model_id: str, browser: str, backend: str, latency_ms: float) -> None:
        """One request served in ``latency_ms``."""
        key = (connection_id, model_id, browser, backend)
        now = self.clock()
        tally = self._open.get(key)
        if tally is None:
            tally = self._open[key] = _Open(now, now)
        tally.last_at = now
        tally.latencies.append(latency_ms)

    def __len__(self) -> int:
        return len(self._open)

    def drain(self) -> list[NewEvent]:
        """The summary events (``SERVED_SUMMARY``) of everything added since the last drain.

        Each payload holds ``n``, ``backend``, ``latency_ms`` (a list), ``latency_ms_total``,
        ``latency_ms_max``, and ``first_at`` and ``last_at`` (when the first and the last of them
        were answered, by the pool's clock).
        """
        tallies, self._open = self._open, {}
        return self._summaries(tallies)

    def peek(self) -> list[NewEvent]:
        """The summary events :meth:`drain` would give now, leaving the tally as it is: for a
        synchronous reader who counts what has been served by the time it asks."""
        return self._summaries(self._open)

    def _summaries(self, tallies: dict[tuple[str, str, str, str], _Open]) -> list[NewEvent]:
        if not tallies:
            return []
        now = self.clock()
        events = []
        for (connection_id, model_id, browser, backend), tally in tallies.items():
            latencies = [round(latency, 3) for latency in tally.latencies]
            summary = InferencesServed(
                connection_id=connection_id,
                model_id=model_id,
                browser=browser,
                n=len(latencies),
                backend=backend,
                first_at=tally.first_at,
                last_at=tally.last_at,
                latency_ms_total=round(sum(tally.latencies), 3),
                latency_ms_max=max(latencies),
                latencies=latencies,
            )
            events.append(encode(summary, now))
        return events
