"""The analysis benchmark's figures, and its check of its own log (its speed is reported, never asserted)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from poolwarden.bench.analysis import build_log, copy_log, measure_in_child
from poolwarden.cli import main


@pytest.mark.parametrize(("events", "rss_events"), [(3000, 4000), (5000, 2000)])
def test_run_reports_every_figure(events: int, rss_events: int, capsys: pytest.CaptureFixture[str]) -> None:
    """A small run returns the documented keys, for the numbers of events asked.

    It exits 0 only if the log it built and loaded is a consistent history: positions 1..n, each
    breaker transition starting where the last one left it, at most one incident open (one the
    log's end cut), the others recovered or out of budget, and (from 1,000 events) more than ten
    incidents and some breaker transitions; otherwise the benchmark raises. Every timed load ran
    in its own process and returned every event of its log.
    """
    argv = ["bench", "analysis", "--json", "--events", str(events), "--rss-events", str(rss_events)]
    assert main([*argv, "--repeat", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["events"] == events
    assert result["rss_events"] == rss_events
    assert result["runs"] == 2
    assert len(result["load_events_runs_s"]) == len(result["read_sql_runs_s"]) == 2
    for key in (
        "load_events_s",
        "read_sql_s",
        "load_ratio",
        "load_cpu_ratio",
        "load_peak_rss_mb",
        "read_sql_peak_rss_mb",
        "rss_load_events_s",
        "rss_peak_mb",
        "recovery_success_rates_s",
        "breaker_timeline_s",
    ):
        assert result[key] > 0, key
    assert result["rss_peak_mb"] > 50  # a whole process with pandas imported, not a delta


def test_no_rss_log_when_asked_for_none(capsys: pytest.CaptureFixture[str]) -> None:
    """``--rss-events 0`` measures no second log."""
    assert (
        main(["bench", "analysis", "--json", "--events", "2000", "--rss-events", "0", "--repeat", "1"]) == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "rss_peak_mb" not in result
    assert result["runs"] == 1


def test_the_copied_log_is_the_built_one(tmp_path: Path) -> None:
    """The first N events of a larger log are the N-event log: the smaller file may be copied."""
    build_log(tmp_path / "small.db", 1500)
    build_log(tmp_path / "large.db", 4000)
    copy_log(tmp_path / "large.db", tmp_path / "copied.db", 1500)
    rows = []
    for name in ("small.db", "copied.db"):
        with sqlite3.connect(tmp_path / name) as connection:
            rows.append(connection.execute("SELECT * FROM events ORDER BY position").fetchall())
        connection.close()
    assert len(rows[0]) == 1500
    assert rows[0] == rows[1]


def test_a_failing_child_is_reported(tmp_path: Path) -> None:
    """A timed process that fails raises, with its error, rather than reporting a figure."""
    with pytest.raises(RuntimeError, match="load_events process failed"):
        measure_in_child("load_events", tmp_path / "missing.db")
    with pytest.raises(ValueError, match="nothing to measure"):
        measure_in_child("anything", tmp_path / "missing.db")
