"""Migrations and ``poolwarden db`` on PostgreSQL: the same revisions as SQLite, checks that read only."""

from __future__ import annotations

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from poolwarden.cli import main
from poolwarden.storage import migrate
from poolwarden.storage.schema import metadata


def _raw(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def test_each_revision_upgrades_an_empty_database_to_the_code_s_schema(postgres_db: str) -> None:
    """0001, 0002, 0003 run one by one on PostgreSQL, keep the rows written in between, and end
    exactly at schema.py's tables."""
    engine = create_async_engine(postgres_db)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate.upgrade, "0001")
        raw = await asyncpg.connect(_raw(postgres_db))
        try:
            await raw.execute(
                "INSERT INTO events (position, stream, version, type, schema_version, occurred_at,"
                " recorded_at, payload) VALUES (1, 's/a', 1, 'Old', 1, 1.5, 2.5, '{}')"
            )
        finally:
            await raw.close()
        async with engine.begin() as conn:
            await conn.run_sync(migrate.upgrade, "0002")
            await conn.run_sync(migrate.upgrade)

        def inspect_it(sync: Connection) -> tuple[list[object], migrate.SchemaState]:
            differences = compare_metadata(MigrationContext.configure(sync), metadata)
            return differences, migrate.schema_status(sync).state

        async with engine.connect() as conn:
            differences, state = await conn.run_sync(inspect_it)
            (row,) = (await conn.exec_driver_sql("SELECT stream, occurred_at, fence FROM events")).all()
    finally:
        await engine.dispose()
    assert differences == []
    assert state is migrate.SchemaState.CURRENT
    assert tuple(row) == ("s/a", 1.5, None)


def test_db_upgrade_current_check_on_a_url(postgres_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """upgrade, current and check take a PostgreSQL URL; the password is never printed."""
    url = postgres_db
    assert main(["db", "current", "--db", url]) == 1
    assert main(["db", "upgrade", "--db", url]) == 0
    assert main(["db", "current", "--db", url]) == 0
    assert main(["db", "check", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "upgraded from (empty database) to 0003" in out
    assert "revision 0003, code head 0003: current" in out
    assert "tables: match the code's schema" in out
    assert "integrity: ok" in out
    assert "pw-test-secret" not in out


async def _execute(url: str, *statements: str) -> None:
    raw = await asyncpg.connect(_raw(url))
    try:
        for statement in statements:
            await raw.execute(statement)
    finally:
        await raw.close()


def test_db_check_finds_drift_and_broken_invariants(
    postgres_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """check reports a dropped column and a stream whose versions have a gap (rows written by
    hand), with exit 1; with amcheck installed it checks each B-tree index too."""
    import asyncio

    assert main(["db", "upgrade", "--db", postgres_db]) == 0
    asyncio.run(
        _execute(
            postgres_db,
            "CREATE EXTENSION IF NOT EXISTS amcheck",
            "ALTER TABLE events DROP COLUMN rung",
            "INSERT INTO events (position, stream, version, type, schema_version, occurred_at,"
            " recorded_at, payload) VALUES (1, 's/a', 1, 'A', 1, 1, 1, '{}'),"
            " (2, 's/a', 3, 'A', 1, 1, 1, '{}')",
        )
    )
    capsys.readouterr()
    assert main(["db", "check", "--db", postgres_db]) == 1
    out = capsys.readouterr().out
    assert "column events.rung is missing" in out
    assert "stream whose versions are not 1..n: s/a" in out


def test_bench_store_runs_on_postgres_and_leaves_nothing(
    postgres_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench store --db URL reports the SQLite run's figures against raw asyncpg, and drops the
    schemas it wrote."""
    import asyncio
    import json

    assert main(["bench", "store", "--db", postgres_db, "--events", "2000", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["backend"] == "postgresql"
    assert figures["appenders"] == 32
    assert figures["buffered_ratio"] > 0
    assert figures["sync_events_per_s"] > 0

    async def schemas() -> list[str]:
        raw = await asyncpg.connect(_raw(postgres_db))
        try:
            return [
                r[0]
                for r in await raw.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pw_bench%'")
            ]
        finally:
            await raw.close()

    assert asyncio.run(schemas()) == []


def test_the_log_commands_read_a_url(postgres_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """events, telemetry, breakers and db leases read a PostgreSQL log read-only, as a file."""
    import asyncio

    from poolwarden.events import NewEvent
    from poolwarden.storage import open_store

    async def write() -> None:
        async with open_store(postgres_db) as store:
            lease = await store.take_lease("main", "host:1:1", ttl=60.0)
            event = NewEvent(
                type="InferenceServed", occurred_at=1.0, payload={}, model_id="m", latency_ms=2.0
            )
            await store.append("pool/main", [event], fence=lease)

    asyncio.run(write())
    for command in (["events"], ["telemetry"], ["breakers"], ["db", "leases"]):
        assert main([*command, "--db", postgres_db]) == 0, command
    out = capsys.readouterr().out
    assert "InferenceServed" in out
    assert "main: fence 1, holder host:1:1" in out


async def test_a_read_only_store_writes_nothing_even_through_fetch(postgres_db: str) -> None:
    """read_only=True refuses appends, and its connections are read-only on the server: a
    writing WITH slipped into fetch() fails there."""
    from poolwarden.errors import ReadOnlyDatabase
    from poolwarden.events import NewEvent
    from poolwarden.storage import open_store

    async with open_store(postgres_db) as store:
        await store.append("s/a", [NewEvent(type="A", occurred_at=1.0, payload={})])
    async with open_store(postgres_db, read_only=True) as reader:
        with pytest.raises(ReadOnlyDatabase):
            await reader.append("s/a", [NewEvent(type="A", occurred_at=1.0, payload={})])
        with pytest.raises(ReadOnlyDatabase):
            await reader.fetch("WITH gone AS (DELETE FROM events RETURNING 1) SELECT count(*) FROM gone")
        assert await reader.stream_version("s/a") == 1
