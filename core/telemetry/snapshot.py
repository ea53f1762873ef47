"""What the metrics expose at one moment, handed from the pool's loop to the exporter's thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from poolwarden.telemetry.queries import LogCounts

__all__ = ["MetricsSnapshot"]


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """The figures exposed at one moment: telemetry's sections, the log's counts, every breaker's state.

    ``telemetry`` holds at least ``connections``, ``circuit_breaker`` and ``models`` (and ``system``
    for a live pool); ``breakers`` pairs each breaker's key with its state.
    """

    taken_at: float
    telemetry: dict[str, Any]
    counts: LogCounts
    breakers: tuple[tuple[str, str], ...]
