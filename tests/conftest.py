"""Shared fixtures: an injected clock, event factories, and a PostgreSQL server."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from poolwarden.clock import FakeClock
from poolwarden.events import NewEvent
from tests.pg_cluster import Cluster, find_bin


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when a test says so."""
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def make_event() -> Callable[..., NewEvent]:
    """A factory of distinct events: each call gets the next sequence number in its payload."""
    counter = itertools.count(1)

    def make(type: str = "SomethingHappened", **fields: Any) -> NewEvent:
        n = next(counter)
        payload = fields.pop("payload", {"n": n})
        occurred_at = fields.pop("occurred_at", 1_800_000_000.0 + n)
        return NewEvent(type=type, occurred_at=occurred_at, payload=payload, **fields)

    return make


# --- PostgreSQL: a server for the PostgreSQL store's tests -------------------------------------

POSTGRES_URL_VARIABLE = "POOLWARDEN_TEST_POSTGRES_URL"


@dataclass(frozen=True)
class PostgresServer:
    """The tests' PostgreSQL server: its URL (a database on it the tests may create others
    from), and the cluster when the tests started it themselves (``None``: the URL's)."""

    url: str
    cluster: Cluster | None

    def url_for(self, database: str) -> str:
        """The server's URL, naming ``database`` instead."""
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The server of ``$POOLWARDEN_TEST_POSTGRES_URL``, or else a throwaway cluster started for
    the session (removed afterwards); skipped where PostgreSQL is not installed."""
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if url:
        yield PostgresServer(url, None)
        return
    bin_dir = find_bin()
    if bin_dir is None:
        pytest.skip(
            f"PostgreSQL is not installed (apt-get install postgresql) and ${POSTGRES_URL_VARIABLE} is unset"
        )
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
        yield PostgresServer(cluster.url, cluster)
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A database of this session's own on the test server (dropped at the end)."""
    import asyncio

    import asyncpg

    name = f"poolwarden_test_{os.getpid()}"
    admin_url = postgres_server.url.replace("postgresql+asyncpg://", "postgresql://")

    async def run(*statements: str) -> None:
        admin = await asyncpg.connect(admin_url)
        try:
            for statement in statements:
                await admin.execute(statement)
        finally:
            await admin.close()

    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    asyncio.run(run(drop, f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_server.url_for(name)
    finally:
        asyncio.run(run(drop))


@pytest.fixture
async def postgres_db(postgres_database: str) -> str:
    """The URL of an empty database on the test server: the session's, its schema emptied
    (dropping a schema takes milliseconds, creating a database a second)."""
    import asyncpg

    conn = await asyncpg.connect(postgres_database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    return postgres_database
