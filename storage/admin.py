"""Looking after a database: its schema revision, upgrades, and the database's own checks.

A target is an SQLite file or a PostgreSQL URL (``postgresql://...``). On SQLite ``check`` runs
``PRAGMA integrity_check``; on PostgreSQL it runs what the server offers a client that may only
read: every index and constraint of the store's tables valid (``pg_index``, ``pg_constraint``),
the invariants the store relies on checked in the data (one event per position and per
(stream, version), each stream's versions 1..n without a gap), and, where the database has the
``amcheck`` extension, ``bt_index_check`` of each B-tree index (it is not installed by ``check``,
which changes nothing; ``CREATE EXTENSION amcheck`` as a superuser enables it).

``db check`` also compares the file's tables, columns, indexes and constraints with the code's
(``poolwarden.storage.schema``) through Alembic's ``compare_metadata``: a file at the head
revision whose ``events`` table was dropped, or that lost a column, is reported, not passed.

These are what ``poolwarden db current | upgrade | check`` run. They never create or change a
file they were only asked to look at.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from poolwarden.errors import ConfigurationError, DatabaseError, DatabaseUnavailable, StoreError
from poolwarden.storage import migrate, postgres_errors
from poolwarden.storage.postgres import PostgresEventStore, is_postgres_url, postgres_url
from poolwarden.storage.schema import metadata
from poolwarden.storage.sqlite import SQLiteEventStore, check_file, sqlite_url
from poolwarden.storage.sqlite_errors import translate

__all__ = [
    "DatabaseReport",
    "check_database",
    "current_revision",
    "schema_drift",
    "shown",
    "upgrade_database",
]


def shown(target: str | os.PathLike[str]) -> str:
    """``target`` as it may be printed: a PostgreSQL URL without its password, a path as it is."""
    if is_postgres_url(target):
        return postgres_url(str(target)).render_as_string(hide_password=True)
    return os.fspath(target)


@dataclass(frozen=True, slots=True)
class DatabaseReport:
    """What ``db check`` found: the schema's standing, how the file's tables differ from the
    code's, and SQLite's integrity problems."""

    path: Path | str
    """The file, or the PostgreSQL URL (without its password)."""
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
    """The database's schema revision against the code's head. Reads only."""
    if is_postgres_url(target):
        return asyncio.run(_postgres(str(target), migrate.schema_status))
    return _status(_file(target))


async def upgrade_database(target: str | os.PathLike[str]) -> tuple[str | None, str]:
    """Bring the database (an SQLite file, created if missing, or a PostgreSQL database) to the
    code's head; returns (revision before, after)."""
    if is_postgres_url(target):
        before = (await _postgres(str(target), migrate.schema_status)).current
        async with PostgresEventStore(str(target), upgrade=True):
            pass
        return before, migrate.head_revision()
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
    """The schema's standing, its drift from the code's tables, and ``PRAGMA integrity_check``
    (on PostgreSQL, the checks the module docstring lists). Reads only."""
    if is_postgres_url(target):
        return asyncio.run(_check_postgres(str(target)))
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


# --- PostgreSQL -------------------------------------------------------------------------------

_T = TypeVar("_T")

_TABLES = tuple(metadata.tables)

# Each check: what it finds, and the SQL that lists one row per problem.
_IN_STORE_TABLES = (
    "t.relname = ANY(CAST(:tables AS text[])) AND t.relnamespace = CAST('public' AS regnamespace)"
)
_POSTGRES_CHECKS = (
    (
        "index not valid (rebuild it: REINDEX INDEX)",
        "SELECT CAST(CAST(i.indexrelid AS regclass) AS text) FROM pg_index i"
        f" JOIN pg_class t ON t.oid = i.indrelid WHERE {_IN_STORE_TABLES}"
        " AND NOT (i.indisvalid AND i.indisready AND i.indislive)",
    ),
    (
        "constraint not validated",
        "SELECT c.conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid"
        f" WHERE {_IN_STORE_TABLES} AND NOT c.convalidated",
    ),
    (
        "(stream, version) held by more than one event",
        "SELECT stream || ' v' || version FROM events GROUP BY stream, version HAVING COUNT(*) > 1 LIMIT 20",
    ),
    (
        "stream whose versions are not 1..n",
        "SELECT stream FROM events GROUP BY stream"
        " HAVING MIN(version) <> 1 OR MAX(version) <> COUNT(*) LIMIT 20",
    ),
)
_BTREE_INDEXES = (
    "SELECT CAST(CAST(i.indexrelid AS regclass) AS text) FROM pg_index i"
    " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class x ON x.oid = i.indexrelid"
    f" JOIN pg_am a ON a.oid = x.relam WHERE {_IN_STORE_TABLES} AND a.amname = 'btree'"
)


async def _postgres(target: str, work: Callable[[Connection], _T]) -> _T:
    """``work`` run on a read-only connection to the PostgreSQL database at ``target``."""
    url = postgres_url(target)
    where = url.render_as_string(hide_password=True)
    settings = {"application_name": "poolwarden-admin", "default_transaction_read_only": "on"}
    engine = create_async_engine(
        url, poolclass=NullPool, connect_args={"timeout": 10.0, "server_settings": settings}
    )
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(work)
    except StoreError:
        raise
    except Exception as error:
        translated = postgres_errors.translate(error, where)
        raise translated or DatabaseUnavailable(where, f"{type(error).__name__}: {error}") from error
    finally:
        await engine.dispose()


def _postgres_report(conn: Connection) -> tuple[migrate.SchemaStatus, list[str], list[str]]:
    status = migrate.schema_status(conn)
    drift = schema_drift(conn)
    problems: list[str] = []
    tables = {"tables": list(_TABLES)}
    has_events = "events" in inspect(conn).get_table_names()
    for what, sql in _POSTGRES_CHECKS:
        if has_events or "FROM events" not in sql:
            problems.extend(f"{what}: {found}" for (found,) in conn.execute(text(sql), tables))
    if conn.execute(text("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'")).scalar():
        for (index,) in conn.execute(text(_BTREE_INDEXES), tables).all():
            try:
                with conn.begin_nested():  # a failed check must not end the transaction
                    conn.execute(
                        text("SELECT bt_index_check(CAST(:index AS regclass), true)"), {"index": index}
                    )
            except Exception as error:
                problems.append(f"amcheck: index {index}: {error}")
    return status, drift, problems


async def _check_postgres(target: str) -> DatabaseReport:
    status, drift, problems = await _postgres(target, _postgres_report)
    where = postgres_url(target).render_as_string(hide_password=True)
    return DatabaseReport(path=where, schema=status, integrity=problems, drift=drift)
