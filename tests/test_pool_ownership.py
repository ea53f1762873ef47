"""Every stream has one owner: a pool holds the lease on its name while it runs (see poolwarden.lease).

Played as an operator would: a second pool of the same name on the same file, the first one
frozen (SIGSTOP) past its lease, then woken up to find its writes refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poolwarden.errors import LeaseHeld
from poolwarden.pool import PoolConfig, ResourcePool

CHILD = str(Path(__file__).with_name("pool_child.py"))
X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)


def _config(db: Path, **overrides: Any) -> PoolConfig:
    options: dict[str, Any] = {
        "connections": 2,
        "workers": ("simulated",),
        "db": db,
        "heartbeat_interval": 30.0,
        "memory_interval": 3600.0,
    }
    options.update(overrides)
    return PoolConfig(**options)


def _rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


class _Child:
    """pool_child.py in its own process; its stdout read line by line, with a deadline."""

    def __init__(self, db: Path, name: str, ttl: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, CHILD, str(db), name, str(ttl)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def line(self) -> str:
        """The child's next line (within 30 s: a child that says nothing has failed)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(30.0):
            text = await asyncio.to_thread(self.process.stdout.readline)
        if not text:
            raise AssertionError(f"the child ended: {self.process.wait()} {self.process.stderr.read()}")  # type: ignore[union-attr]
        return text.strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.process.communicate()  # waits, and closes its pipes


@pytest.fixture
def children() -> Iterator[list[_Child]]:
    made: list[_Child] = []
    yield made
    for child in made:
        child.stop()


async def _start_when_free(config: PoolConfig, attempts: int = 5) -> ResourcePool:
    """A started pool of ``config``; while the name is held, wait for the moment the refusal
    says the lease lapses, and try again (a refused pool is not started again: a new one)."""
    for _ in range(attempts):
        pool = ResourcePool(config)
        try:
            await pool.start()
        except LeaseHeld as held:
            await asyncio.sleep(max(held.expires_at - time.time(), 0.0) + 0.05)
        else:
            return pool
    raise AssertionError("the lease never lapsed")


@pytest.mark.slow
async def test_a_second_pool_is_refused_takes_over_after_expiry_and_the_stale_pool_is_fenced(
    tmp_path: Path, children: list[_Child]
) -> None:
    """Pool A (another process) runs; pool B of the same name is refused while A renews its
    lease. A is frozen; once its lease lapses B takes over with a higher fencing number. A is
    woken: its requests are refused (LeaseLost), its close() says so, and none of its writes
    after the takeover (its PoolStopped among them) is in the log."""
    db = tmp_path / "pool.db"
    first = _Child(db, "main", ttl=1.0)
    children.append(first)
    started = await first.line()
    assert started.startswith("started "), started
    fence_a = int(started.split()[1])

    with pytest.raises(LeaseHeld) as held:
        await ResourcePool(_config(db, lease_ttl=1.0)).start()
    assert f":{first.process.pid}:" in held.value.holder
    # The refused pool wrote nothing and left the name to A: A still renews and serves.
    assert _rows(db, "SELECT COUNT(*) FROM events WHERE fence IS NOT NULL AND fence != ?", fence_a) == [(0,)]

    os.kill(first.process.pid, signal.SIGSTOP)
    second = await _start_when_free(_config(db, lease_ttl=1.0))
    try:
        lease_b = second.store.lease  # type: ignore[attr-defined]
        assert lease_b.fence > fence_a
        assert lease_b.took_over_from == held.value.holder
        await second.load_model("toy-mlp")
        result = await second.run_inference("toy-mlp", {"input": X})
        assert result.connection_id in ("conn-0", "conn-1")

        os.kill(first.process.pid, signal.SIGCONT)
        assert await first.line() == "lost"
        assert await first.line() == "closed LeaseLost"
        assert first.process.wait(timeout=30) == 0
    finally:
        await second.close()

    ((taken_at,),) = _rows(
        db, "SELECT position FROM events WHERE type = 'PoolStarted' AND fence = ?", lease_b.fence
    )
    assert _rows(db, "SELECT COUNT(*) FROM events WHERE fence = ? AND position > ?", fence_a, taken_at) == [
        (0,)
    ]
    assert _rows(db, "SELECT fence FROM events WHERE type = 'PoolStopped'") == [(lease_b.fence,)]
    assert _rows(db, "SELECT COUNT(*) FROM events WHERE fence = ?", fence_a)[0][0] > 0  # A did write before
    payload = _rows(db, "SELECT payload FROM events WHERE type = 'PoolStarted' AND fence = ?", lease_b.fence)
    assert held.value.holder in payload[0][0]


async def test_a_closed_pool_frees_its_name_at_once(tmp_path: Path) -> None:
    """close() releases the lease: the next pool of the name starts without waiting, fenced higher."""
    db = tmp_path / "pool.db"
    async with ResourcePool(_config(db, lease_ttl=60.0)) as first:
        fence = first.store.lease.fence  # type: ignore[attr-defined]
        with pytest.raises(LeaseHeld):
            await ResourcePool(_config(db, lease_ttl=60.0)).start()
    async with ResourcePool(_config(db, lease_ttl=60.0)) as again:
        lease = again.store.lease  # type: ignore[attr-defined]
        assert (lease.fence > fence, lease.took_over_from) == (True, None)
        await again.load_model("toy-mlp")
        await again.run_inference("toy-mlp", {"input": X})


async def test_pools_of_other_names_share_the_log_with_their_own_streams(tmp_path: Path) -> None:
    """Two pools, ``main`` and ``east``, on one file at once: each serves, its events on its own
    streams and connection ids, under its own fencing number."""
    db = tmp_path / "pool.db"
    async with ResourcePool(_config(db)) as main, ResourcePool(_config(db, name="east")) as east:
        assert sorted(main.members) == ["conn-0", "conn-1"]
        assert sorted(east.members) == ["east.conn-0", "east.conn-1"]
        for pool in (main, east):
            await pool.load_model("toy-mlp")
            await pool.run_inference("toy-mlp", {"input": X})
        fences = {main.store.lease.fence, east.store.lease.fence}  # type: ignore[attr-defined]
        main_fence = main.store.lease.fence  # type: ignore[attr-defined]
    assert len(fences) == 2
    streams = {s for (s,) in _rows(db, "SELECT DISTINCT stream FROM events")}
    assert {"pool/main", "pool/east", "pool/main/bridge", "pool/east/bridge"} <= streams
    assert {"connection/conn-0", "connection/east.conn-0"} <= streams
    assert any(s.startswith("breaker/east.conn-") for s in streams)
    assert any(s.startswith("breaker/conn-") for s in streams)
    for stream, fence in _rows(db, "SELECT DISTINCT stream, fence FROM events"):
        owner = "east" if stream.startswith(("pool/east", "connection/east.", "breaker/east.")) else "main"
        assert (fence == main_fence) == (owner == "main"), (stream, fence)
    assert _rows(db, "SELECT name, released_at IS NOT NULL FROM leases ORDER BY name") == [
        ("east", 1),
        ("main", 1),
    ]
    # Started again, each pool takes up its own breakers only, never the other's.
    async with ResourcePool(_config(db)) as main, ResourcePool(_config(db, name="east")) as east:
        assert {b.key for b in main.registry}
        assert all(b.key.startswith("conn-") for b in main.registry)
        assert all(b.key.startswith("east.conn-") for b in east.registry)


def test_a_pool_name_must_be_fit_for_stream_ids(tmp_path: Path) -> None:
    """A name with a slash, a dot or capitals could collide with another pool's ids: refused."""
    from poolwarden.errors import ConfigurationError

    for name in ("a/b", "a.b", "Main", ""):
        with pytest.raises(ConfigurationError):
            _config(tmp_path / "x.db", name=name)


async def test_a_fenced_view_writes_nothing_without_a_lease_and_reads_through(tmp_path: Path) -> None:
    """FencedStore refuses writes until it holds a lease (nothing is written unowned by mistake),
    then stamps its fencing number on each; reads see the store as it is."""
    from poolwarden.errors import OwnershipError
    from poolwarden.events import NewEvent
    from poolwarden.storage import open_store
    from poolwarden.storage.fenced import FencedStore

    event = NewEvent(type="Happened", occurred_at=1.0)
    async with open_store(tmp_path / "x.db") as store:
        view = FencedStore(store, lease=None)
        with pytest.raises(OwnershipError):
            await view.append("s/a", [event])
        with pytest.raises(OwnershipError):
            await view.save_snapshot("s/a", 1, {})
        view.lease = await store.take_lease("main", "me:1:1", ttl=60.0)
        await view.append("s/a", [event, event])
        await view.save_snapshot("s/a", 2, {"n": 2})
        assert [e.fence for e in await view.read_stream("s/a")] == [1, 1]
        assert [e.version async for e in view.iter_all()] == [1, 2]
        assert (await view.load_snapshot("s/a")) is not None
        assert view.path == store.path  # type: ignore[attr-defined]
