"""load_events reading chunks in a background thread: the same frame, typed errors, no thread left."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import poolwarden.analysis.columns as columns
import poolwarden.analysis.load as load
from poolwarden.analysis import load_events
from poolwarden.analysis.columns import ChunkDecoder
from poolwarden.errors import CorruptDatabase, SchemaOutdated
from poolwarden.storage.schema import EVENT_COLUMNS as TABLE_COLUMNS
from tests.analysis_scenario import T0, create_empty_store, write_scenario

_INSERT = f"INSERT INTO events ({', '.join(TABLE_COLUMNS)}) VALUES ({', '.join('?' * len(TABLE_COLUMNS))})"


@pytest.fixture
def scenario_db(tmp_path: Path) -> Path:
    """A fresh file holding the scenario log."""
    path = tmp_path / "scenario.db"
    asyncio.run(write_scenario(path))
    return path


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "poolwarden-load-reader"]


def _row(position: int, **values: Any) -> tuple[Any, ...]:
    """A raw events row: defaults for every column, ``values`` by column name."""
    row: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS)
    row.update(
        position=position,
        stream=f"s/{position}",
        version=1,
        type="Odd",
        schema_version=1,
        occurred_at=T0 + position,
        recorded_at=T0 + position + 0.5,
        payload=json.dumps({"n": position}),
    )
    row.update(values)
    return tuple(row[name] for name in TABLE_COLUMNS)


def _raw_log(path: Path, rows: list[tuple[Any, ...]]) -> Path:
    create_empty_store(path)
    with sqlite3.connect(path) as raw:
        raw.executemany(_INSERT, rows)
    raw.close()
    return path


def test_small_chunks_give_the_same_frame(scenario_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read three events a query into arrays grown on the way, the frame equals the one-chunk frame."""
    whole = load_events(scenario_db)
    filtered = load_events(scenario_db, types=["BreakerOpened", "RungFailed"], since=T0 + 5)
    monkeypatch.setattr(load, "CHUNK", 3)
    monkeypatch.setattr(columns, "_FIRST_CAPACITY", 4)
    pd.testing.assert_frame_equal(load_events(scenario_db), whole)
    in_pieces = load_events(scenario_db, types=["BreakerOpened", "RungFailed"], since=T0 + 5)
    pd.testing.assert_frame_equal(in_pieces, filtered)  # most chunks match nothing
    assert len(filtered) == 6
    assert _readers() == []


def test_text_values_keep_newlines_quotes_and_empty_strings(tmp_path: Path) -> None:
    """Text columns round-trip exactly: newlines, quotes, brackets, non-ASCII, '' apart from NULL."""
    odd = ["two\nlines", 'a "quoted", [bracketed] value', "ünïcødé ✓", "", "null"]
    rows = [_row(i + 1, stream=value, connection_id=value, model_id=None) for i, value in enumerate(odd)]
    rows.append(_row(6, model_id="", rung="ping"))
    df = load_events(_raw_log(tmp_path / "odd.db", rows))
    assert df["stream"].tolist()[:5] == odd
    assert df["connection_id"].tolist()[:5] == odd
    assert df["connection_id"].isna().tolist() == [False] * 5 + [True]
    assert df["model_id"].isna().tolist() == [True] * 5 + [False]
    assert df["model_id"].iloc[5] == ""
    assert df["rung"].cat.categories.tolist() == ["ping"]
    assert df["payload"].tolist() == [{"n": n} for n in range(1, 7)]


def test_latency_and_times_keep_their_values(tmp_path: Path) -> None:
    """latency_ms keeps NULL as NaN and odd floats; times keep microseconds."""
    latencies = [None, 0.1, 123456789.125, 1e-300, float("inf")]
    rows = [_row(i + 1, latency_ms=v, occurred_at=T0 + i + 0.000001) for i, v in enumerate(latencies)]
    df = load_events(_raw_log(tmp_path / "numbers.db", rows))
    assert np.isnan(df["latency_ms"].iloc[0])
    assert df["latency_ms"].iloc[1:].tolist() == pytest.approx(latencies[1:], rel=1e-14)
    assert df["occurred_at"].iloc[2] == pd.Timestamp(int(T0 + 2) * 1_000_000 + 1, unit="us", tz="UTC")


@pytest.mark.parametrize(
    ("column", "value", "complaint"),
    [
        ("version", "seven", "version is not a number"),
        ("latency_ms", "slow", "latency_ms is not a number"),
        ("payload", "{not json", "payload is not valid JSON"),
    ],
)
def test_a_bad_value_is_corrupt_and_the_reader_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, column: str, value: str, complaint: str
) -> None:
    """A value that cannot be decoded raises CorruptDatabase naming it, the reader thread ended."""
    rows = [_row(i) for i in range(1, 41)]
    rows[4] = _row(5, **{column: value})
    path = _raw_log(tmp_path / "bad.db", rows)
    monkeypatch.setattr(load, "CHUNK", 2)  # the reader is ahead, blocked on a full queue
    with pytest.raises(CorruptDatabase, match=complaint):
        load_events(path)
    assert _readers() == []


def test_a_query_error_in_the_reader_arrives_typed(scenario_db: Path) -> None:
    """A log at the head revision but lacking a column raises SchemaOutdated from the reader thread."""
    with sqlite3.connect(scenario_db) as raw:
        raw.execute("ALTER TABLE events DROP COLUMN outcome")
    raw.close()
    with pytest.raises(SchemaOutdated, match="outcome"):
        load_events(scenario_db)
    assert _readers() == []


def test_an_interrupt_while_decoding_stops_and_joins_the_reader(
    scenario_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KeyboardInterrupt in the caller's thread propagates; the reader is stopped early and joined."""
    decoded = ChunkDecoder.add

    def add_then_interrupt(self: ChunkDecoder, row: Any) -> None:
        decoded(self, row)
        raise KeyboardInterrupt  # as if Ctrl-C came while the first of 33 chunks was decoded

    monkeypatch.setattr(load, "CHUNK", 1)
    monkeypatch.setattr(ChunkDecoder, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        load_events(scenario_db)
    assert _readers() == []
    monkeypatch.undo()
    assert len(load_events(scenario_db)) == 33  # nothing of the stopped read lingers
