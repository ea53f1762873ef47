"""The breaker benchmark runs and reports every figure (sizes kept small; timings are not asserted)."""

from __future__ import annotations

import json

from poolwarden.bench.breaker import run


def test_benchmark_reports_every_figure_and_an_exact_restore() -> None:
    """A small run returns the issue's keys, JSON-ready, and its restores equal the live breakers."""
    result = run(True, calls=2_000, restore_events=3_000, restore_breakers=100, snapshot_every=20)
    for key in ("bare_ns", "protected_ns", "overhead_ns", "create_10k_s", "bytes_per_breaker"):
        assert isinstance(result[key], int | float)
        assert result[key] > 0 or key == "overhead_ns"
    assert result["restore_exact"] is True
    assert result["restore_tail_events"] < result["restore_events"]
    assert json.loads(json.dumps(result)) == result
