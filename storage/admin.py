"""Looking after a database file: its schema revision, upgrades, and SQLite's integrity check.

``db check`` also compares the file's tables, columns, indexes and constraints with the code's
(``poolwarden.storage.schema``) through Alembic's ``compare_metadata``: a file at the head
revision whose ``events`` table was dropped, or that lost a column, is reported, not passed.

These are what ``poolwarden db current | upgrade | check`` run. They never create or change a
file they were only asked to look at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

from poolwarden.errors import ConfigurationError, DatabaseError, StoreError
from poolwarden.storage import migrate
from poolwarden.storage.schema import metadata
from poolwarden.storage.sqlite import SQLiteEventStore, check_file, sqlite_url
from poolwarden.storage.sqlite_errors import translate

__all__ = ["DatabaseReport", "check_database", "current_revision", "schema_drift", "upgrade_database"]


@dataclass(frozen=True, slots=True)
class DatabaseReport:
    """What ``db check`` found: the schema's standing, how the file's tables differ from the
    code's, and SQLite's integrity problems."""

    path: Path
    schema: migrate.SchemaStatus
    integrity: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    """Each difference between the file's tables and the code's, one line each (none: they match)."""

    @property
    def ok(self) -> bool:
        """Whether the schema is at the code's head, matches the code's tables, and is intact."""
        return self.schema.state is migrate.SchemaState.CURRENT and not self.drift and not self.integrity


def _file(target: str | os.PathLike[str]) -> Path:
    _, path = sqlite_url(target)
    if path is None:
        raise ConfigurationError("an in-memory database has nothing to look after: give a file")
    check_file(path, must_exist=True)
    return path


def _read_only_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    event.listen(engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA busy_timeout = 5000"))
    return engine


def _status(path: Path) -> migrate.SchemaStatus:
    engine = _read_only_engine(path)
    try:
        with engine.connect() as conn:
            return migrate.schema_status(conn)
    except StoreError:
        raise
    except Exception as error:
        translated = translate(error, path)
        raise translated or DatabaseError(path, str(error)) from error
    finally:
        engine.dispose()


def current_revision(target: str | os.PathLike[str]) -> migrate.SchemaStatus:
    """The file's schema revision against the code's head. Reads only."""
    return _status(_file(target))


async def upgrade_database(target: str | os.PathLike[str]) -> tuple[str | None, str]:
    """Bring the file (created if missing) to the code's head; returns (revision before, after)."""
    _, path = sqlite_url(target)
    if path is None:
        raise ConfigurationError("an in-memory database has nothing to upgrade: give a file")
    check_file(path)
    before = _status(path).current if path.exists() and path.stat().st_size > 0 else None
    async with SQLiteEventStore(path, upgrade=True):
        pass
    return before, migrate.head_revision()


def schema_drift(conn: Connection) -> list[str]:
    """How the database's tables differ from the code's schema, one line a difference."""
    differences = compare_metadata(MigrationContext.configure(conn), metadata)
    return [_describe(diff) for diff in differences]


def _describe(diff: Any) -> str:
    """One of Alembic's diff tuples (or a list of them, for a modified column) as a sentence,
    said of the file: ``add_*`` is what the code has and the file lacks."""
    if isinstance(diff, list):
        return "; ".join(_describe(item) for item in diff)
    kind = diff[0]
    if kind == "add_table":
        return f"table {diff[1].name} is missing"
    if kind == "remove_table":
        return f"table {diff[1].name} is not in the code's schema"
    if kind == "add_column":
        return f"column {diff[2]}.{diff[3].name} is missing"
    if kind == "remove_column":
        return f"column {diff[2]}.{diff[3].name} is not in the code's schema"
    if kind in ("add_index", "add_constraint"):
        what, item = kind.removeprefix("add_"), diff[1]
        return f"{what} {item.name} on {item.table.name} is missing"
    if kind in ("remove_index", "remove_constraint"):
        what, item = kind.removeprefix("remove_"), diff[1]
        return f"{what} {item.name} on {item.table.name} is not in the code's schema"
    if kind.startswith("modify_"):
        _, _, table, column, _, found, expected = diff
        what = kind.removeprefix("modify_")
        return f"column {table}.{column}: {what} is {found!r}, the code has {expected!r}"
    return repr(diff)


def check_database(target: str | os.PathLike[str]) -> DatabaseReport:
    """The schema's standing, its drift from the code's tables, and ``PRAGMA integrity_check``.
    Reads only."""
    path = _file(target)
    status = _status(path)
    engine = _read_only_engine(path)
    drift: list[str] = []
    try:
        with engine.connect() as conn:
            drift = schema_drift(conn)
            rows = conn.exec_driver_sql("PRAGMA integrity_check").all()
        problems = [str(row[0]) for row in rows]
        integrity = [] if problems == ["ok"] else problems
    except Exception as error:
        translated = translate(error, path)
        if translated is None:
            raise
        integrity = [translated.detail]
    finally:
        engine.dispose()
    return DatabaseReport(path=path, schema=status, integrity=integrity, drift=drift)
