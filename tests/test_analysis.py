"""Each analysis on the hand-built scenario log (tests/analysis_scenario.py), whose answers are known."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from poolwarden.analysis import (
    breaker_timeline,
    connection_timeline,
    empty_events,
    error_rates,
    incidents,
    latency_percentiles,
    load_events,
    memory_samples,
    mtbf,
    mttr,
    recovery_success_rates,
)
from poolwarden.errors import ConfigurationError
from tests.analysis_scenario import T0, create_empty_store, write_scenario


def at(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(T0 + seconds, unit="s", tz="UTC")


@pytest.fixture(scope="module")
def df(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The scenario log, written through the store and loaded once for the module."""
    import asyncio

    path = tmp_path_factory.mktemp("scenario") / "scenario.db"
    asyncio.run(write_scenario(path))
    return load_events(path)


def test_breaker_timeline_lists_every_interval_with_its_reason(df: pd.DataFrame) -> None:
    """The conn-1 breaker's five intervals come out in order, the last open to the log's end."""
    timeline = breaker_timeline(df)
    conn1 = timeline[timeline["key"] == "conn-1"]
    assert conn1["state"].tolist() == ["closed", "open", "half_open", "closed", "open"]
    assert conn1["start"].tolist() == [at(0), at(10), at(40), at(41), at(100)]
    assert conn1["end"].tolist() == [at(10), at(40), at(41), at(100), at(200)]
    assert conn1["duration"].dt.total_seconds().tolist() == [10, 30, 1, 59, 100]
    assert conn1["open_ended"].tolist() == [False, False, False, False, True]
    assert conn1["reason"].tolist() == [None, "consecutive_failures", None, None, "failure_rate"]


def test_breaker_that_never_tripped_has_one_closed_lane(df: pd.DataFrame) -> None:
    """A model breaker with failures but no transition is closed from its first event to the log's end."""
    timeline = breaker_timeline(df)
    model = timeline[timeline["key"] == "conn-1/toy-mlp"]
    assert model[["state", "model_id", "connection_id"]].astype(str).values.tolist() == [
        ["closed", "toy-mlp", "conn-1"]
    ]
    assert model["start"].tolist() == [at(1)]
    assert model["end"].tolist() == [at(200)]


def test_connection_timeline_follows_the_ladder(df: pd.DataFrame) -> None:
    """conn-2's lifecycle states follow its two recoveries: restart then healthy, ping then healthy."""
    states = connection_timeline(df)
    conn2 = states[states["key"] == "conn-2"]
    assert conn2["state"].tolist() == ["restarting", "healthy", "pinging", "healthy"]
    assert conn2["start"].tolist() == [at(50), at(54), at(60), at(61)]


def test_recovery_success_rates_by_rung(df: pd.DataFrame) -> None:
    """Per rung: attempts, successes, rate, and the recovered incidents' time to recover."""
    rates = recovery_success_rates(df).set_index("rung")
    assert rates.index.tolist() == ["ping", "reconnect", "restart"]
    assert rates["attempts"].tolist() == [3, 2, 2]
    assert rates["successes"].tolist() == [1, 1, 1]
    assert rates["failures"].tolist() == [2, 1, 1]
    assert rates["rate"].tolist() == pytest.approx([1 / 3, 0.5, 0.5])
    assert rates["median_attempt_s"].tolist() == pytest.approx([5.0, 6.0, 4.0])
    assert rates["median_recover_s"].tolist() == pytest.approx([1.0, 7.5, 4.0])


def test_recovery_success_rates_fill_group_from_the_incident(df: pd.DataFrame) -> None:
    """A successful ping names no error kind; it is counted under its incident's kind."""
    by_kind = recovery_success_rates(df, by="error_kind").set_index("error_kind")
    assert by_kind.loc["device_lost", ["attempts", "successes"]].tolist() == [1, 1]
    assert by_kind.loc["transport", ["attempts", "successes"]].tolist() == [5, 1]
    by_browser = recovery_success_rates(df, by=("browser",)).set_index("browser")
    assert by_browser.loc["firefox", "rate"] == 1.0
    assert by_browser.loc["firefox", "median_recover_s"] == pytest.approx(2.5)
    assert by_browser.loc["chromium", "rate"] == pytest.approx(0.2)


def test_recovery_success_rates_by_two_columns_keeps_the_ladder_order(df: pd.DataFrame) -> None:
    """Grouped by rung and browser, rows follow the ladder (ping, reconnect, restart), then browser."""
    table = recovery_success_rates(df, by=("rung", "browser"))
    assert table[["rung", "browser"]].astype(str).values.tolist() == [
        ["ping", "chromium"],
        ["ping", "firefox"],
        ["reconnect", "chromium"],
        ["restart", "chromium"],
        ["restart", "firefox"],
    ]


def test_grouping_by_an_unknown_column_is_a_configuration_error(df: pd.DataFrame) -> None:
    """A typo in ``by`` is named in a ConfigurationError, not a KeyError from pandas."""
    with pytest.raises(ConfigurationError, match="modle_id"):
        recovery_success_rates(df, by="modle_id")


def test_incidents_one_row_each_with_its_story(df: pd.DataFrame) -> None:
    """Each incident shows its signal, the rungs decided, their results, its outcome and duration."""
    table = incidents(df).set_index("incident_id")
    assert table.index.tolist() == ["inc-1", "inc-2", "inc-3", "inc-4"]
    inc1 = table.loc["inc-1"]
    assert inc1["first_signal"] == "RecoveryStarted"
    assert inc1["trigger"] == "heartbeat_missed"
    assert inc1["decisions"] == ["ping", "reconnect"]
    assert inc1["actions"] == ["ping:timed_out", "reconnect:succeeded"]
    assert inc1["outcome"] == "recovered"
    assert inc1["duration"] == pd.Timedelta(seconds=7.5)
    inc4 = table.loc["inc-4"]
    assert inc4["decisions"] == ["ping", "reconnect", "restart"]
    assert inc4["outcome"] == "budget_exhausted"
    assert inc4["rung"] == "restart"
    assert inc4["ended"] == at(130)
    assert table["open"].tolist() == [False] * 4
    assert table["browser"].astype(str).tolist() == ["chromium", "firefox", "firefox", "chromium"]


def test_mttr_per_connection(df: pd.DataFrame) -> None:
    """MTTR averages each connection's recovered incidents; the quarantined one is counted, not timed."""
    table = mttr(df).set_index("connection_id")
    assert table.loc["conn-1", ["incidents", "recovered"]].tolist() == [2, 1]
    assert table.loc["conn-1", "mttr_s"] == pytest.approx(7.5)
    assert table.loc["conn-2", "mttr_s"] == pytest.approx(2.5)
    assert table.loc["conn-2", "max_ttr_s"] == pytest.approx(4.0)


def test_mtbf_per_connection(df: pd.DataFrame) -> None:
    """MTBF is the time up (first event to log end or quarantine, minus incidents) over the incidents."""
    table = mtbf(df).set_index("connection_id")
    assert table.loc["conn-1"].tolist() == pytest.approx([130.0, 27.5, 2, 51.25])  # quarantined at +130
    assert table.loc["conn-2"].tolist() == pytest.approx([150.0, 5.0, 2, 72.5])


def test_error_rates_count_call_errors_per_bucket(df: pd.DataFrame) -> None:
    """Call errors fall into one-minute buckets per model; a recovery's events are not errors again."""
    table = error_rates(df, by="model_id", freq="1min")
    rows = [(t, str(m), n) for t, m, n in table[["time", "model_id", "errors"]].itertuples(index=False)]
    assert rows == [(at(0), "(none)", 2), (at(0), "toy-mlp", 1), (at(180), "toy-mlp", 1)]
    assert table["per_s"].tolist() == pytest.approx([2 / 60, 1 / 60, 1 / 60])


def test_error_rates_by_kind_and_bad_bucket(df: pd.DataFrame) -> None:
    """Grouped by kind over 10 minutes every call error is in one bucket; a nonsense freq is refused."""
    table = error_rates(df, by="error_kind", freq="10min")
    assert dict(zip(table["error_kind"].astype(str), table["errors"], strict=True)) == {
        "timeout": 1,
        "transport": 2,
        "validation": 1,
    }
    with pytest.raises(ConfigurationError):
        error_rates(df, freq="soon")


def test_latency_percentiles_per_model(df: pd.DataFrame) -> None:
    """Call latencies per model: count, mean, percentiles, max (recovery durations excluded)."""
    table = latency_percentiles(df, by="model_id").set_index("model_id")
    assert table.loc["(none)", ["count", "mean_ms", "p50_ms", "max_ms"]].tolist() == pytest.approx(
        [2, 75.0, 75.0, 100.0]
    )
    assert table.loc["toy-mlp", ["count", "p50_ms", "max_ms"]].tolist() == pytest.approx([2, 1005.0, 2000.0])
    assert list(latency_percentiles(df, by=None, percentiles=(0.5,)).columns) == [
        "count",
        "mean_ms",
        "p50_ms",
        "max_ms",
    ]


def test_memory_samples_read_mb_or_bytes(df: pd.DataFrame) -> None:
    """Memory samples come out in MB whether the payload gave pss_mb or pss_bytes."""
    table = memory_samples(df)
    assert table["pss_mb"].tolist() == [400.0, 300.0, 450.0]
    assert table["browser"].astype(str).tolist() == ["chromium", "firefox", "chromium"]
    assert math.isnan(table["js_heap_mb"].iloc[1])


ANALYSES: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "breaker_timeline": breaker_timeline,
    "connection_timeline": connection_timeline,
    "recovery_success_rates": recovery_success_rates,
    "recovery_by_browser": lambda d: recovery_success_rates(d, by=("rung", "browser")),
    "incidents": incidents,
    "mttr": mttr,
    "mtbf": mtbf,
    "error_rates": error_rates,
    "latency_percentiles": latency_percentiles,
    "memory_samples": memory_samples,
}


@pytest.mark.parametrize("name", list(ANALYSES))
def test_empty_log_gives_empty_frames_of_the_same_shape(name: str, df: pd.DataFrame, tmp_path: Path) -> None:
    """On a log with no events, each analysis returns no rows with the full result's columns and dtypes."""
    empty = load_events(create_empty_store(tmp_path / "empty.db"))
    assert empty.empty
    assert (empty.dtypes == empty_events().dtypes).all()
    full, none = ANALYSES[name](df), ANALYSES[name](empty)
    assert len(full) > 0
    assert len(none) == 0
    assert list(none.columns) == list(full.columns)
    assert none.dtypes.astype(str).tolist() == full.dtypes.astype(str).tolist()
