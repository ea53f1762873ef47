"""The analysis benchmark's fixture and figures (its speed is reported, never asserted)."""

from __future__ import annotations

from pathlib import Path

from poolwarden.analysis import breaker_timeline, incidents, load_events
from poolwarden.bench.analysis import build_log, run


def test_run_reports_every_figure() -> None:
    """A small run returns the documented keys, for the number of events asked."""
    result = run(events=3000, repeat=1)
    assert result["events"] == 3000
    for key in (
        "load_events_s",
        "read_sql_s",
        "load_ratio",
        "recovery_success_rates_s",
        "breaker_timeline_s",
    ):
        assert result[key] > 0, key


def test_fixture_log_is_a_consistent_history(tmp_path: Path) -> None:
    """Each breaker transition starts where the last one left it; only the last incident may be open."""
    path = tmp_path / "bench.db"
    build_log(path, 5000)
    df = load_events(path)
    assert df["position"].tolist() == list(range(1, 5001))
    changes = df[df["stream"].astype(str).str.startswith("breaker/") & df["to_state"].notna()]
    for _, rows in changes.groupby(changes["stream"].astype(str)):
        states = ["closed", *rows["to_state"].astype(str)]
        assert rows["from_state"].astype(str).tolist() == states[:-1]
    table = incidents(df)
    assert len(table) > 10
    assert table["open"].sum() <= 1  # only an incident cut by the log's end may be open
    assert set(table["outcome"].astype(str)) <= {"recovered", "budget_exhausted", "open"}
    assert len(breaker_timeline(df)) > 0
