"""A streaming latency summary: count, mean, max and percentiles in constant memory.

A long run must stay flat: keeping every latency in a list grew the demo's memory by ~20 MB over
385k requests. :class:`LatencySummary` keeps a histogram of logarithmic buckets instead (each 1 %
wider than the one before, from 1 us to over an hour: ~1,400 counters, whatever the run's length),
so a percentile is exact to within 1 % of its value.
"""

from __future__ import annotations

import math

__all__ = ["LatencySummary"]

_LOW_MS = 0.001
_RATIO = 1.01
_LOG_RATIO = math.log(_RATIO)
_BUCKETS = int(math.log(1e7 / _LOW_MS) / _LOG_RATIO) + 2


class LatencySummary:
    """Latencies in milliseconds, summarised as they come (see the module docstring)."""

    __slots__ = ("_counts", "count", "max", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._counts = [0] * _BUCKETS

    def add(self, latency_ms: float) -> None:
        """Count one latency."""
        self.count += 1
        self.total += latency_ms
        if latency_ms > self.max:
            self.max = latency_ms
        if latency_ms <= _LOW_MS:
            index = 0
        else:
            index = min(_BUCKETS - 1, int(math.log(latency_ms / _LOW_MS) / _LOG_RATIO) + 1)
        self._counts[index] += 1

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100), within 1 % of the exact one; None before any latency."""
        if self.count == 0:
            return None
        rank = min(self.count - 1, int(self.count * q / 100))  # as sorted(latencies)[rank] would
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen > rank:
                if index == 0:
                    return _LOW_MS
                # The bucket's upper edge, capped by the largest value seen.
                return min(self.max, _LOW_MS * _RATIO**index)
        return self.max

    @property
    def mean(self) -> float | None:
        """The mean latency, None before any."""
        return self.total / self.count if self.count else None
