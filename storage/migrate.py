"""Schema revisions: where a database file stands, and bringing it to the code's head.

Alembic is configured in code from the migrations shipped inside the package, and runs on a
connection the caller already holds, inside its write transaction: two processes that open a new
file at the same moment cannot both create the schema.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

__all__ = ["SchemaState", "SchemaStatus", "alembic_config", "head_revision", "schema_status", "upgrade"]


class SchemaState(enum.Enum):
    """How a database's schema compares with the code's."""

    EMPTY = "empty"  # no tables at all: a new file
    CURRENT = "current"  # at the code's head revision
    OUTDATED = "outdated"  # an older revision the code knows how to upgrade
    TOO_NEW = "too_new"  # a revision the code does not know: written by a newer poolwarden
    FOREIGN = "foreign"  # tables, but no poolwarden revision: someone else's database


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """A database's revision, the code's head revision, and what that means."""

    state: SchemaState
    current: str | None
    head: str


def alembic_config() -> Config:
    """An Alembic configuration pointing at the migrations shipped in ``poolwarden.migrations``."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("poolwarden.migrations")))
    return config


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest schema revision this code knows."""
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - the package always ships its migrations
        raise RuntimeError("poolwarden.migrations holds no revision")
    return head


def schema_status(connection: Connection) -> SchemaStatus:
    """Where the database on ``connection`` stands against the code's head revision."""
    head = head_revision()
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
        state = SchemaState.FOREIGN if tables else SchemaState.EMPTY
    elif current == head:
        state = SchemaState.CURRENT
    else:
        known = {script.revision for script in _script().walk_revisions()}
        state = SchemaState.OUTDATED if current in known else SchemaState.TOO_NEW
    return SchemaStatus(state=state, current=current, head=head)


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Upgrade the database on ``connection`` to ``revision``, inside the caller's transaction."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
