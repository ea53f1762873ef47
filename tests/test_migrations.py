"""The Alembic migrations build exactly the schema the code describes, and ship in the package."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from poolwarden.storage import SQLiteEventStore, migrate
from poolwarden.storage.schema import metadata


def test_upgrading_an_empty_file_matches_the_metadata(tmp_path: Path) -> None:
    """An empty file upgraded to head has exactly the tables, columns and constraints of schema.py."""
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    with engine.begin() as conn:
        migrate.upgrade(conn)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert migrate.schema_status(conn).state is migrate.SchemaState.CURRENT
    engine.dispose()
    assert differences == []


async def test_opening_a_new_file_creates_the_schema_at_head(tmp_path: Path) -> None:
    """A store opened on a path that does not exist yet creates it at the head revision, in WAL mode."""
    target = tmp_path / "new.db"
    async with SQLiteEventStore(target):
        pass
    with sqlite3.connect(target) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrate.head_revision()
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT count(*) FROM store_info WHERE key = 'store_id'").fetchone()[0] == 1


def test_migrations_ship_inside_the_package() -> None:
    """The revision scripts and env.py are package files of poolwarden.migrations."""
    folder = resources.files("poolwarden.migrations")
    assert folder.joinpath("env.py").is_file()
    names = {entry.name for entry in folder.joinpath("versions").iterdir()}
    assert {"0001_events_and_snapshots.py", "0002_store_info.py"} <= names
