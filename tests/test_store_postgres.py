"""What only a PostgreSQL store shows: processes and connections appending at once to one
database, followers woken by NOTIFY, and the server's failures as typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from poolwarden.errors import ConcurrencyConflict, ConfigurationError, DatabaseUnavailable
from poolwarden.events import NewEvent, RecordedEvent
from poolwarden.storage import PostgresEventStore, open_store
from poolwarden.storage.postgres import portable
from tests.conftest import PostgresServer
from tests.pg_cluster import Cluster, find_bin

CHILD = str(Path(__file__).with_name("child_appender.py"))
MakeEvent = Callable[..., NewEvent]


def _spawn(url: str, prefix: str, count: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, url, prefix, str(count), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _collect(follower: object, count: int, seen: list[RecordedEvent]) -> None:
    async for recorded in follower:  # type: ignore[attr-defined]
        seen.append(recorded)
        if len(seen) == count:
            return


def test_open_store_picks_postgres_by_url() -> None:
    """open_store gives a PostgreSQL store for postgresql:// and postgresql+asyncpg:// URLs,
    both speaking through asyncpg, and never shows the password."""
    for url in ("postgresql://u:secret@h:5/db", "postgresql+asyncpg://u:secret@h:5/db"):
        store = open_store(url)
        assert isinstance(store, PostgresEventStore)
        assert store.url.drivername == "postgresql+asyncpg"
        assert "secret" not in repr(store)


def test_sqlite_queries_are_translated_for_postgres() -> None:
    """fetch()'s SQLite-style parameters and json_extract become asyncpg's and jsonb's; quoted
    text and casts are left alone."""
    sql, args = portable(
        "SELECT json_extract(payload, '$.n'), '?', x::text FROM events WHERE a = ? AND b = ?", (1, 2)
    )
    assert sql == "SELECT (payload::jsonb ->> 'n'), '?', x::text FROM events WHERE a = $1 AND b = $2"
    assert args == [1, 2]
    sql, args = portable("SELECT 1 WHERE a >= :since AND b < :since + :span", {"since": 3, "span": 4})
    assert (sql, args) == ("SELECT 1 WHERE a >= $1 AND b < $1 + $2", [3, 4])
    with pytest.raises(ConfigurationError):
        portable("SELECT ?", ())


@pytest.mark.slow
async def test_processes_and_connections_append_at_once_and_a_follower_sees_positions_in_order(
    postgres_db: str, make_event: MakeEvent
) -> None:
    """Three processes and two more stores in this one append at once; a follower of yet
    another connection sees every event exactly once, positions strictly increasing by one."""
    async with PostgresEventStore(postgres_db) as reader:
        follower = reader.follow(poll_interval=0.5)
        seen: list[RecordedEvent] = []
        total = 3 * 200 + 2 * 8 * 25
        collecting = asyncio.ensure_future(_collect(follower, total, seen))
        children = [_spawn(postgres_db, name, 200, "--shared", "pool/main") for name in ("p1", "p2", "p3")]

        async def local(store: PostgresEventStore, name: str) -> None:
            async def one(index: int) -> None:
                for version in range(25):
                    await store.append(f"{name}/{index}", [make_event()], expected_version=version)

            await asyncio.gather(*(one(i) for i in range(8)))

        async with PostgresEventStore(postgres_db) as a, PostgresEventStore(postgres_db) as b:
            await asyncio.gather(local(a, "a"), local(b, "b"))
        outputs = [await asyncio.to_thread(child.communicate, timeout=120) for child in children]
        for child, (_, err) in zip(children, outputs, strict=True):
            assert child.returncode == 0, err
        await asyncio.wait_for(collecting, timeout=30)
        await follower.aclose()
        positions = [e.position for e in seen]
        assert positions == list(range(1, total + 1))
        streams = await reader.streams()
        assert streams["pool/main"] == 300
        assert sum(streams.values()) == total
        acked = [line.split() for out, _ in outputs for line in out.splitlines() if line != "ready"]
        by_key = {(e.stream, e.version): e.position for e in seen}
        assert all(by_key[(s, int(v))] == int(p) for s, v, p in acked)


async def test_a_commit_in_another_store_wakes_a_follower_at_once(
    postgres_db: str, make_event: MakeEvent
) -> None:
    """LISTEN/NOTIFY: a follower with a 30 s poll interval sees another connection's append
    within a second."""
    async with PostgresEventStore(postgres_db) as watcher, PostgresEventStore(postgres_db) as writer:
        follower = watcher.follow(poll_interval=30.0)
        waiting = asyncio.ensure_future(anext(follower))
        for _ in range(2000):  # up to 20 s: the follower reads the empty log and starts listening
            if watcher._listener is not None:
                break
            await asyncio.sleep(0.01)
        assert watcher._listener is not None
        await writer.append("s/a", [make_event()])
        recorded = await asyncio.wait_for(waiting, timeout=2.0)
        assert (recorded.stream, recorded.version) == ("s/a", 1)
        await follower.aclose()


async def test_telemetry_queries_run_on_postgres(postgres_db: str) -> None:
    """The telemetry's SQL (written for SQLite) answers on PostgreSQL through fetch()."""
    from poolwarden.telemetry.queries import browser_figures, log_counts

    async with PostgresEventStore(postgres_db) as store:
        placed = NewEvent(type="ModelPlaced", occurred_at=1.0, payload={"model_type": "mlp"}, model_id="m")
        served = NewEvent(
            type="InferenceServed",
            occurred_at=2.0,
            payload={},
            model_id="m",
            browser="chromium",
            latency_ms=3.0,
        )
        await store.append("pool/main", [placed, served, served])
        counts = await log_counts(store)
        figures = await browser_figures(store)
    async with open_store(":memory:") as twin:  # the same events on SQLite: the same answers
        await twin.append("pool/main", [placed, served, served])
        assert await log_counts(twin) == counts
        assert await browser_figures(twin) == figures
    assert [(f.model_type, f.browser, f.successes) for f in figures] == [("mlp", "chromium", 2)]


async def test_wrong_password_is_a_typed_error(postgres_server: PostgresServer, postgres_db: str) -> None:
    """A refused password is DatabaseUnavailable saying authentication failed, without the password."""
    url = make_url(postgres_db).set(password="not-the-password").render_as_string(hide_password=False)
    with pytest.raises(DatabaseUnavailable, match="authentication failed") as caught:
        await PostgresEventStore(url).open()
    assert "not-the-password" not in str(caught.value)


async def test_missing_database_is_a_typed_error(postgres_server: PostgresServer) -> None:
    """A database that does not exist is DatabaseUnavailable saying so."""
    with pytest.raises(DatabaseUnavailable, match="no such database"):
        await PostgresEventStore(postgres_server.url_for("no_such_db_here")).open()


async def test_no_server_is_a_typed_error() -> None:
    """Nothing listening at the URL's port is DatabaseUnavailable."""
    with pytest.raises(DatabaseUnavailable, match="cannot be reached"):
        await PostgresEventStore("postgresql://u:p@127.0.0.1:1/db", connect_timeout=2).open()


async def test_a_lost_writer_connection_raises_then_the_store_reconnects(
    postgres_db: str, make_event: MakeEvent
) -> None:
    """The writer's connection killed between batches: the next append raises a typed error
    and wrote nothing, the one after reconnects; a retry with the expected version never
    duplicates."""
    import asyncpg

    async with PostgresEventStore(postgres_db) as store:
        await store.append("s/a", [make_event()], expected_version=0)
        admin = await asyncpg.connect(postgres_db.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'poolwarden' AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        # The dead connection is found by this append (DatabaseUnavailable: it wrote nothing)...
        with contextlib.suppress(DatabaseUnavailable):
            await store.append("s/a", [make_event()], expected_version=1)
        # ... and if it did commit after all, the retry is refused, never duplicated.
        with contextlib.suppress(ConcurrencyConflict):
            await store.append("s/a", [make_event()], expected_version=1)
        assert await store.stream_version("s/a") == 2
        assert [e.version for e in await store.read_stream("s/a")] == [1, 2]


@pytest.mark.slow
async def test_server_restart_mid_run_gives_typed_errors_then_recovers(
    postgres_server: PostgresServer, make_event: MakeEvent
) -> None:
    """While the server is down appends and reads raise DatabaseUnavailable (nothing hangs);
    once it is back the same store appends and reads again, and nothing acknowledged is lost."""
    own: Cluster | None = None
    cluster = postgres_server.cluster
    if cluster is None:  # an outside server is not ours to stop: start one of our own
        bin_dir = find_bin()
        if bin_dir is None:
            pytest.skip("PostgreSQL is not installed: no server of our own to restart")
        cluster = own = Cluster(bin_dir)
        cluster.start()
    try:
        async with PostgresEventStore(cluster.url_for("postgres"), connect_timeout=3) as store:
            start = await store.stream_version("restart/s")
            acknowledged = 0
            for _ in range(20):
                await store.append("restart/s", [make_event()], expected_version=start + acknowledged)
                acknowledged += 1
            await asyncio.to_thread(cluster.stop)
            with pytest.raises(DatabaseUnavailable):
                await store.append("restart/s", [make_event()], expected_version=start + acknowledged)
            with pytest.raises(DatabaseUnavailable):
                await store.read_stream("restart/s")
            await asyncio.to_thread(cluster.start)
            for _ in range(10):
                await store.append("restart/s", [make_event()], expected_version=start + acknowledged)
                acknowledged += 1
            events = await store.read_stream("restart/s", from_version=start + 1)
            assert [e.version for e in events] == list(range(start + 1, start + acknowledged + 1))
    finally:
        if own is not None:
            own.remove()


async def test_stores_in_two_schemas_of_one_database_are_two_logs(
    postgres_db: str, make_event: MakeEvent
) -> None:
    """schema= keeps a log's tables apart: each store's positions start at 1, each sees its own."""
    async with (
        PostgresEventStore(postgres_db) as main,
        PostgresEventStore(postgres_db, schema="other_log") as other,
    ):
        await main.append("s/a", [make_event(), make_event()])
        result = (await other.append("s/a", [make_event()])).result()
        assert result.first_position == 1
        assert await main.stream_version("s/a") == 2
        assert await other.stream_version("s/a") == 1
    with pytest.raises(ConfigurationError):
        PostgresEventStore(postgres_db, schema="Bad-Name")


async def test_a_follower_polls_when_its_listen_connection_is_lost(
    postgres_db: str, make_event: MakeEvent
) -> None:
    """Every connection of the watching store killed: its follower still sees another store's
    append (by polling, then by LISTEN once it reconnects)."""
    import asyncpg

    async with PostgresEventStore(postgres_db) as watcher:
        follower = watcher.follow(poll_interval=0.2)
        waiting = asyncio.ensure_future(anext(follower))
        for _ in range(200):
            if watcher._listener is not None:
                break
            await asyncio.sleep(0.01)
        admin = await asyncpg.connect(postgres_db.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'poolwarden' AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        async with PostgresEventStore(postgres_db) as writer:
            await writer.append("s/a", [make_event()])
            recorded = await asyncio.wait_for(waiting, timeout=5.0)
            assert recorded.stream == "s/a"
            await writer.append("s/b", [make_event()])
            assert (await asyncio.wait_for(anext(follower), timeout=5.0)).stream == "s/b"
        await follower.aclose()


class _LosesCommit:
    """An asyncpg connection whose COMMIT is lost on the way back (``after=True``: the server
    committed, the answer never came) or on the way there (``after=False``: nothing committed)."""

    def __init__(self, driver: Any, *, after: bool) -> None:
        self._driver = driver
        self._after = after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)

    async def execute(self, sql: str, *args: Any) -> Any:
        import asyncpg

        if sql.endswith("COMMIT"):
            if self._after:
                await self._driver.execute(sql, *args)
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )
        return await self._driver.execute(sql, *args)


@pytest.mark.parametrize("committed", [True, False])
async def test_a_connection_lost_while_committing_is_resolved_or_raised(
    postgres_db: str, make_event: MakeEvent, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """An answer to COMMIT that never comes: the store asks the server whether the batch is in
    the log; the append returns if it is, raises DatabaseUnavailable if not, and never writes twice."""
    async with PostgresEventStore(postgres_db) as store:
        real = store._writing

        @contextlib.asynccontextmanager
        async def losing() -> AsyncIterator[Any]:
            async with real() as driver:
                yield _LosesCommit(driver, after=committed)

        monkeypatch.setattr(store, "_writing", losing)
        if committed:
            result = (await store.append("s/a", [make_event()], expected_version=0)).result()
            assert result.last_version == 1
        else:
            with pytest.raises(DatabaseUnavailable):
                await store.append("s/a", [make_event()], expected_version=0)
        monkeypatch.setattr(store, "_writing", real)
        assert await store.stream_version("s/a") == (1 if committed else 0)
        if not committed:
            await store.append("s/a", [make_event()], expected_version=0)
        assert [e.version for e in await store.read_stream("s/a")] == [1]


async def test_a_read_or_write_held_past_its_timeout_is_a_typed_error_and_the_store_goes_on(
    postgres_db: str, make_event: MakeEvent
) -> None:
    """With the events table locked by another session, a read waits read_timeout and an append
    write_timeout, each then DatabaseUnavailable (not a hang); once the lock is gone the same
    store reads and appends again, and the refused append wrote nothing."""
    import asyncpg

    async with PostgresEventStore(postgres_db, read_timeout=0.5, write_timeout=0.5) as store:
        await store.append("t/a", [make_event()], expected_version=0)
        admin = await asyncpg.connect(postgres_db.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            locked = admin.transaction()
            await locked.start()
            await admin.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(DatabaseUnavailable):
                await store.read_stream("t/a")
            read_waited = loop.time() - started
            started = loop.time()
            with pytest.raises(DatabaseUnavailable):
                await store.append("t/a", [make_event()], expected_version=1)
            write_waited = loop.time() - started
            await locked.rollback()
        finally:
            await admin.close()
        # Each waited its own timeout, not the defaults (120 s and 10 s) nor nothing at all.
        assert 0.4 < read_waited < 5.0
        assert 0.4 < write_waited < 5.0
        assert [e.version for e in await store.read_stream("t/a")] == [1]
        await store.append("t/a", [make_event()], expected_version=1)
        assert await store.stream_version("t/a") == 2
