"""The breaker benchmark runs and reports every figure (sizes kept small; timings are not asserted)."""

from __future__ import annotations

import json

import pytest

from poolwarden.cli import main


def test_benchmark_reports_every_figure_and_an_exact_restore(capsys: pytest.CaptureFixture[str]) -> None:
    """A small run prints the issue's keys as one JSON object, and its restores equal the live breakers."""
    argv = ["--calls", "2000", "--events", "3000", "--breakers", "100", "--snapshot-every", "20"]
    argv += ["--idle-breakers", "200"]
    assert main(["bench", "breaker", "--json", *argv]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.strip().splitlines()  # with --json: nothing but the result, no progress
    assert captured.err == ""
    result = json.loads(line)
    for key in ("bare_ns", "protected_ns", "overhead_ns", "create_10k_s", "bytes_per_breaker", "guard_ns"):
        assert isinstance(result[key], int | float)
        assert result[key] > 0 or key == "overhead_ns"
    assert result["restore_exact"] is True
    # The idle driver, measured in its own process with 200 breakers alive.
    assert result["idle_breakers"] == 200
    assert result["idle_seconds"] >= 10
    assert 0 <= result["idle_cpu_pct"] < 100
    assert result["guard_timed_ns"] > 0
    assert result["restore_tail_events"] < result["restore_events"]
    assert result["restore_events"] >= 3000
    assert result["restore_breakers"] == 100
    assert result["restore_snapshot_every"] == 20
    # Restored again from the file, in fresh processes, beside raw sqlite3 making the same reads.
    assert result["restore_file_breakers"] == 100
    assert result["restore_file_s"] > 0
    assert result["raw_same_reads_s"] > 0
    # Figures are rounded to the millisecond: the ratio is the rounded ones' within that.
    # The ratio is of the unrounded times; the times are printed to the millisecond, so the ratio
    # must lie within what the rounded figures allow (a small run's times are a few ms).
    restore_s, raw_s, half_ms = result["restore_file_s"], result["raw_same_reads_s"], 0.0005
    low = (restore_s - half_ms) / (raw_s + half_ms)
    high = (restore_s + half_ms) / max(raw_s - half_ms, 1e-9)
    assert low - 0.005 <= result["restore_file_ratio"] <= high + 0.005
