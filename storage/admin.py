"""Looking after a database file: its schema revision, upgrades, and SQLite's integrity check.

These are what ``poolwarden db current | upgrade | check`` run. They never create or change a
file they were only asked to look at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from poolwarden.errors import ConfigurationError, DatabaseError, StoreError
from poolwarden.storage import migrate
from poolwarden.storage.sqlite import SQLiteEventStore, check_file, sqlite_url
from poolwarden.storage.sqlite_errors import translate

__all__ = ["DatabaseReport", "check_database", "current_revision", "upgrade_database"]


@dataclass(frozen=True, slots=True)
class DatabaseReport:
    """What ``db check`` found: the schema's standing and SQLite's integrity problems."""

    path: Path
    schema: migrate.SchemaStatus
    integrity: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the schema is at the code's head and the integrity check found nothing."""
        return self.schema.state is migrate.SchemaState.CURRENT and not self.integrity


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


def check_database(target: str | os.PathLike[str]) -> DatabaseReport:
    """The schema's standing and ``PRAGMA integrity_check`` for the file. Reads only."""
    path = _file(target)
    status = _status(path)
    engine = _read_only_engine(path)
    try:
        with engine.connect() as conn:
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
    return DatabaseReport(path=path, schema=status, integrity=integrity)
