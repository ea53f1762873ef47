"""The analysis benchmark's figures, and its check of its own log (its speed is reported, never asserted)."""

from __future__ import annotations

import json

import pytest

from poolwarden.cli import main


@pytest.mark.parametrize("events", [3000, 5000])
def test_run_reports_every_figure(events: int, capsys: pytest.CaptureFixture[str]) -> None:
    """A small run returns the documented keys, for the number of events asked.

    It exits 0 only if the log it built and loaded is a consistent history: positions 1..n, each
    breaker transition starting where the last one left it, at most one incident open (one the
    log's end cut), the others recovered or out of budget, and (from 1,000 events) more than ten
    incidents and some breaker transitions; otherwise the benchmark raises.
    """
    assert main(["bench", "analysis", "--json", "--events", str(events)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["events"] == events
    for key in (
        "load_events_s",
        "read_sql_s",
        "load_ratio",
        "recovery_success_rates_s",
        "breaker_timeline_s",
    ):
        assert result[key] > 0, key
