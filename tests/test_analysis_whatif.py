"""whatif: a log written by a real breaker, replayed through other policies, as a frame."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

from poolwarden.analysis import load_events, recorded_events, whatif
from poolwarden.analysis.whatif import WHATIF_COLUMNS
from poolwarden.events import RecordedEvent
from poolwarden.policy import BreakerPolicy, OpenBackoff
from poolwarden.storage import SQLiteEventStore
from poolwarden.whatif import what_if
from tests.analysis_scenario import create_empty_store, write_events
from tests.test_whatif import RECORDING, recorded_outage


@pytest.fixture
def outage_db(tmp_path: Path) -> Path:
    """The breaker tests' recorded outage (a real breaker, 4 failures, then two minutes of them), stored."""
    events = [(record.stream, record.to_new_event()) for record in recorded_outage().records]
    path = tmp_path / "outage.db"
    asyncio.run(write_events(path, events))
    return path


def test_recording_policy_reproduces_the_log(outage_db: Path) -> None:
    """Through its own policy the log's opens and rejections come back exactly."""
    row = whatif(load_events(outage_db), RECORDING).iloc[0]
    assert row["key"] == "conn-1"
    assert row["whatif_opens"] == row["recorded_opens"] >= 3
    assert row["whatif_rejected"] == row["recorded_rejected"] > 0
    assert row["whatif_opened_at"] == row["recorded_opened_at"]
    assert row["unknown_outcome"] == 0


def test_laxer_policy_never_opens(outage_db: Path) -> None:
    """A policy needing 500 failures never opens; the recorded rejections become unknown outcomes."""
    row = whatif(load_events(outage_db), BreakerPolicy(consecutive_failures=500)).iloc[0]
    assert row["whatif_opens"] == 0
    assert row["whatif_rejected"] == 0
    assert row["unknown_outcome"] == row["recorded_rejected"] > 0
    assert row["final_state"] == "closed"


def test_frame_round_trip_matches_the_store(outage_db: Path) -> None:
    """The frame's events, turned back into RecordedEvents, equal what the store reads, and replay alike."""
    df = load_events(outage_db)

    async def read() -> list[RecordedEvent]:
        async with SQLiteEventStore(outage_db, read_only=True) as store:
            return list(await store.read_all(limit=100_000))

    stored = asyncio.run(read())
    rebuilt = recorded_events(df)
    assert [(e.position, e.stream, e.type, e.payload, e.error_kind) for e in rebuilt] == [
        (e.position, e.stream, e.type, e.payload, e.error_kind) for e in stored
    ]
    strict = BreakerPolicy(consecutive_failures=3, backoff=OpenBackoff(base=30.0, jitter="none"))
    direct = what_if(stored, strict).breakers["conn-1"]
    row = whatif(df, strict).iloc[0]
    assert row["whatif_opened_at"] == [pd.Timestamp(at, unit="s", tz="UTC") for at in direct.opened]
    assert row["whatif_rejected"] == direct.rejected


def test_whatif_on_a_log_without_breakers_is_empty(tmp_path: Path) -> None:
    """No breaker events: an empty frame with the what-if columns."""
    table = whatif(load_events(create_empty_store(tmp_path / "empty.db")), RECORDING)
    assert table.empty
    assert list(table.columns) == list(WHATIF_COLUMNS)
