"""Alembic environment for the poolwarden event store.

poolwarden runs migrations in code, on a connection it already holds inside a write transaction
(``config.attributes["connection"]``), so that checking the revision and upgrading are one atomic
step even when several processes open a new file at once. Run by hand (``alembic -c
migrations/alembic.ini -x db=PATH upgrade head``), it opens the file itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from poolwarden.storage.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    db = context.get_x_argument(as_dictionary=True).get("db")
    url = context.config.get_main_option("sqlalchemy.url") or (f"sqlite:///{db}" if db else None)
    if url is None:
        raise SystemExit("give the database: alembic -x db=PATH ...")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


_main()
