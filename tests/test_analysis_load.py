"""load_events: typed columns, filters, bad files, a log being written, a log left by a killed writer."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import poolwarden.analysis.load as load
from poolwarden.analysis import EVENT_COLUMNS, empty_events, incidents, load_events, memory_samples
from poolwarden.errors import (
    ConfigurationError,
    CorruptDatabase,
    DatabaseUnavailable,
    SchemaMismatch,
    SchemaTooNew,
)
from poolwarden.storage import SQLiteEventStore
from tests.analysis_scenario import T0, create_empty_store, write_scenario

CHILD = str(Path(__file__).with_name("analysis_child.py"))


@pytest.fixture
def scenario_db(tmp_path: Path) -> Path:
    """A fresh file holding the scenario log."""
    path = tmp_path / "scenario.db"
    asyncio.run(write_scenario(path))
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_columns_and_values_match_the_store(scenario_db: Path) -> None:
    """Every event comes back with the documented dtypes and the values the store holds."""
    df = load_events(scenario_db)
    assert list(df.columns) == list(EVENT_COLUMNS)
    assert df.dtypes.astype(str).tolist() == empty_events().dtypes.astype(str).tolist()
    assert str(df["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert isinstance(df["type"].dtype, pd.CategoricalDtype)
    async with SQLiteEventStore(scenario_db, read_only=True) as store:
        recorded = await store.read_all(limit=1000)
    assert len(df) == len(recorded) == 33
    for row, event in zip(df.itertuples(index=False), recorded, strict=True):
        assert row.position == event.position
        assert (row.stream, row.version, row.type) == (event.stream, event.version, event.type)
        assert row.occurred_at == pd.Timestamp(round(event.occurred_at * 1e6), unit="us", tz="UTC")
        assert row.payload == event.payload
        assert (None if pd.isna(row.rung) else row.rung) == event.rung
        assert (None if pd.isna(row.incident_id) else row.incident_id) == event.incident_id
        if event.latency_ms is None:
            assert np.isnan(row.latency_ms)
        else:
            assert row.latency_ms == pytest.approx(event.latency_ms, rel=1e-14)


def test_filters_by_time_type_and_stream(scenario_db: Path) -> None:
    """since (inclusive), until (exclusive), types, and streams (exact, or a prefix ending in /) narrow it."""
    window = load_events(scenario_db, since=T0 + 10, until=pd.Timestamp(T0 + 41, unit="s", tz="UTC"))
    assert window["occurred_at"].min() == pd.Timestamp(T0 + 10, unit="s", tz="UTC")
    assert window["occurred_at"].max() < pd.Timestamp(T0 + 41, unit="s", tz="UTC")
    assert "BreakerClosed" not in set(window["type"])
    opened = load_events(scenario_db, types="BreakerOpened")
    assert opened["occurred_at"].tolist() == [
        pd.Timestamp(T0 + 10, unit="s", tz="UTC"),
        pd.Timestamp(T0 + 100, unit="s", tz="UTC"),
    ]
    breakers = load_events(scenario_db, streams="breaker/")
    assert set(breakers["stream"]) == {"breaker/conn-1", "breaker/conn-1/toy-mlp"}
    exact = load_events(scenario_db, streams=["breaker/conn-1"], types=["CallFailed", "BreakerOpened"])
    assert exact["type"].astype(str).tolist() == [
        "CallFailed",
        "CallFailed",
        "BreakerOpened",
        "BreakerOpened",
    ]
    two = load_events(scenario_db, streams=["connection/conn-2", "breaker/conn-1/toy-mlp"])
    assert two["position"].is_monotonic_increasing  # even if SQLite walks the (stream, version) index
    assert set(two["stream"]) == {"connection/conn-2", "breaker/conn-1/toy-mlp"}
    naive = load_events(scenario_db, since="2027-01-15 08:03:00")  # naive means UTC
    assert naive["type"].astype(str).tolist() == ["CallFailed"]
    assert load_events(scenario_db, types=[]).empty


def test_loading_never_writes_the_file(scenario_db: Path) -> None:
    """The database file is byte for byte the same after a load."""
    before = _digest(scenario_db)
    load_events(scenario_db)
    assert _digest(scenario_db) == before


def test_sqlite_url_is_accepted(scenario_db: Path) -> None:
    """An sqlite:/// URL names the same log as its path."""
    assert len(load_events(f"sqlite:///{scenario_db}")) == 33


def test_missing_file_is_unavailable(tmp_path: Path) -> None:
    """A path with no file raises DatabaseUnavailable and creates nothing."""
    with pytest.raises(DatabaseUnavailable):
        load_events(tmp_path / "nope.db")
    assert list(tmp_path.iterdir()) == []


def test_file_that_is_not_sqlite_is_corrupt(tmp_path: Path) -> None:
    """A text file raises CorruptDatabase."""
    path = tmp_path / "notes.db"
    path.write_text("these are not the events you are looking for\n" * 10)
    with pytest.raises(CorruptDatabase):
        load_events(path)


def test_newer_schema_is_refused(scenario_db: Path) -> None:
    """A log whose schema revision this code does not know raises SchemaTooNew."""
    with sqlite3.connect(scenario_db) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(SchemaTooNew):
        load_events(scenario_db)


def test_someone_elses_database_is_refused(tmp_path: Path) -> None:
    """An SQLite file without the poolwarden schema raises SchemaMismatch."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE recipes (name TEXT)")
    with pytest.raises(SchemaMismatch):
        load_events(path)


def test_bad_arguments_are_configuration_errors(scenario_db: Path) -> None:
    """An in-memory target or a since that is no time raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        load_events(":memory:")
    with pytest.raises(ConfigurationError):
        load_events(scenario_db, since="after lunch")


def test_empty_log_loads_as_empty_typed_frame(tmp_path: Path) -> None:
    """A store with no events loads as an empty frame with every column and dtype."""
    df = load_events(create_empty_store(tmp_path / "empty.db"))
    assert df.empty
    assert list(df.columns) == list(EVENT_COLUMNS)
    assert df.dtypes.astype(str).tolist() == empty_events().dtypes.astype(str).tolist()


def _spawn(db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def _acks(child: subprocess.Popen[str], count: int) -> list[int]:
    assert child.stdout is not None
    assert child.stderr is not None
    positions: list[int] = []
    while len(positions) < count:  # wait for acknowledgements, never for time
        line = await asyncio.to_thread(child.stdout.readline)
        assert line, child.stderr.read()
        positions.append(int(line))
    return positions


def _kill(child: subprocess.Popen[str]) -> list[int]:
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert child.stdout is not None
    return [int(line) for line in child.stdout.read().split()]


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [load.CHUNK, 7])
async def test_log_being_written_loads_as_a_consistent_snapshot(
    scenario_db: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process appends, each load is a gap-free prefix holding every acknowledged event."""
    monkeypatch.setattr(load, "CHUNK", chunk)  # 7: a dozen queries, each while the writer goes on
    with _spawn(scenario_db) as child:
        try:
            acked = await _acks(child, 50)
            sizes = []
            for _ in range(3):
                df = await asyncio.to_thread(load_events, scenario_db)
                assert df["position"].tolist() == list(range(1, len(df) + 1))
                ours = df[df["stream"] == "connection/conn-9"]
                assert ours["version"].tolist() == list(range(1, len(ours) + 1))
                assert len(df) >= max(acked)
                sizes.append(len(df))
                acked += await _acks(child, 20)
            assert sizes[-1] > sizes[0]  # it did read a moving log
        finally:
            await asyncio.to_thread(_kill, child)


@pytest.mark.slow
async def test_log_of_a_killed_writer_loads_with_its_incident_open(scenario_db: Path) -> None:
    """After SIGKILL mid-incident every acknowledged event loads, the incident is open, the file untouched."""
    with _spawn(scenario_db) as child:
        acked = await _acks(child, 30)
        acked += await asyncio.to_thread(_kill, child)
    await asyncio.to_thread(_check_killed_log, scenario_db, acked)


def _check_killed_log(scenario_db: Path, acked: list[int]) -> None:
    assert Path(f"{scenario_db}-wal").exists()  # left behind, not checkpointed
    before = _digest(scenario_db)
    df = load_events(scenario_db)
    assert _digest(scenario_db) == before
    assert set(acked) <= set(df["position"])
    table = incidents(df).set_index("incident_id")
    crashed = table.loc["inc-crash"]
    assert bool(crashed["open"])
    assert crashed["outcome"] == "open"
    assert crashed["decisions"] == ["restart"]
    assert pd.isna(crashed["ended"])
    assert crashed["started"] + crashed["duration"] == df["occurred_at"].max()
    assert not table.loc[["inc-1", "inc-2", "inc-3", "inc-4"], "open"].any()
    assert len(memory_samples(df)) >= 28 + 3
