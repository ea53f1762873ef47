"""load_events on a PostgreSQL log: the same frame as from SQLite, for the same events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from poolwarden.analysis import load_events
from poolwarden.clock import FakeClock
from poolwarden.errors import DatabaseUnavailable, SchemaMismatch
from poolwarden.storage import PostgresEventStore
from tests.analysis_scenario import T0, scenario, write_events


async def _write_postgres(url: str) -> None:
    async with PostgresEventStore(url, clock=FakeClock(T0)) as store:
        for stream, event in scenario():
            await store.append(stream, [event])


def _same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(left.drop(columns=["payload"]), right.drop(columns=["payload"]))
    assert list(left["payload"]) == list(right["payload"])


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"types": ["BreakerOpened", "CallFailed"]},
        {"streams": ["breaker/"]},
        {"since": T0 - 100, "until": T0 + 1000, "streams": "pool/main"},
    ],
)
async def test_a_postgres_log_loads_as_the_same_log_in_sqlite(
    postgres_db: str, tmp_path: Path, filters: dict[str, Any]
) -> None:
    """Every column, dtype and value of the frame equals the SQLite one of the same events,
    filters included; read in chunks smaller than the log (two connections, one snapshot)."""
    import poolwarden.analysis.load as load

    await _write_postgres(postgres_db)
    await write_events(tmp_path / "twin.db", scenario())
    original = load.CHUNK
    load.CHUNK = 7
    try:
        from_postgres = load_events(postgres_db, **filters)
    finally:
        load.CHUNK = original
    from_sqlite = load_events(tmp_path / "twin.db", **filters)
    assert len(from_postgres) > 0 or filters
    _same(from_postgres, from_sqlite)


async def test_an_empty_postgres_log_loads_as_an_empty_frame(postgres_db: str) -> None:
    """A database with the schema and no events gives the empty frame, typed."""
    async with PostgresEventStore(postgres_db):
        pass
    assert load_events(postgres_db).empty


def test_a_database_without_a_log_and_a_bad_password_are_typed_errors(postgres_db: str) -> None:
    """No poolwarden schema: SchemaMismatch; a refused password: DatabaseUnavailable."""
    from sqlalchemy.engine import make_url

    with pytest.raises(SchemaMismatch):
        load_events(postgres_db)
    bad = make_url(postgres_db).set(password="wrong").render_as_string(hide_password=False)
    with pytest.raises(DatabaseUnavailable, match="authentication failed"):
        load_events(bad)
