"""The demo's streaming latency summary: percentiles within 1 % in constant memory."""

from __future__ import annotations

import random
import sys

from poolwarden.cli.latency import LatencySummary


def test_percentiles_are_within_one_percent_of_the_exact_ones() -> None:
    """p50, p99 and the max of 100k log-normal latencies match sorting them, within 1 %."""
    rng = random.Random(3)
    values = [rng.lognormvariate(0, 1.5) for _ in range(100_000)]
    summary = LatencySummary()
    for value in values:
        summary.add(value)
    ordered = sorted(values)
    for q in (50, 90, 99, 99.9):
        exact = ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]
        got = summary.percentile(q)
        assert got is not None
        assert abs(got - exact) <= 0.01 * exact, (q, got, exact)
    assert summary.max == ordered[-1]
    assert summary.count == len(values)
    assert summary.mean is not None
    assert abs(summary.mean - sum(values) / len(values)) < 1e-6


def test_memory_does_not_grow_with_the_number_of_latencies() -> None:
    """A summary of a million latencies holds as many counters as one of ten."""
    small, large = LatencySummary(), LatencySummary()
    for i in range(10):
        small.add(float(i))
    for i in range(1_000_000):
        large.add((i % 5000) / 10)
    assert sys.getsizeof(large._counts) == sys.getsizeof(small._counts)
    assert LatencySummary().percentile(50) is None
