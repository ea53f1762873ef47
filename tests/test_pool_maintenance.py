"""Maintenance without an outage: recycling one connection at a time, requests that wait for a
connection coming back, a rolling restart that keeps serving."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from poolwarden.pool import ResourcePool
from tests.pool_support import X
from tests.pool_support import pool_config as _config
from tests.pool_support import steady_host as _host


class OutWatcher:
    """Records the most connections ever out of service at once, looking at each lifecycle change."""

    def __init__(self, pool: ResourcePool) -> None:
        self.pool = pool
        self.most = 0
        self.recycles: set[int] = set()
        self._stop = asyncio.Event()
        self.task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, self.pool.out_of_service)
            self.recycles |= {id(m.recycling) for m in self.pool.members.values() if m.recycling is not None}
            await self.pool.wait_changed()

    async def stop(self) -> int:
        self._stop.set()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return self.most


async def _clients(
    pool: ResourcePool, n: int, clients: int, until: OutWatcher | None = None, recycles: int = 0
) -> list[Any]:
    async def client(count: int) -> list[Any]:
        out: list[Any] = []
        while len(out) < count or (until is not None and len(until.recycles) < recycles):
            try:
                out.append(await pool.run_inference("toy-mlp", {"input": X}, deadline=20.0))
            except Exception as error:
                out.append(error)
        return out

    batches = await asyncio.gather(*(client(n // clients) for _ in range(clients)))
    return [o for batch in batches for o in batch]


async def test_recycling_under_load_fails_no_request(tmp_path: Path) -> None:
    """With recycle_after_jobs small and two connections, every request (at least 600, and on
    until four recycles started) succeeds, and connections recycle one at a time."""
    # Three slots each for six clients: both connections serve, so both come due together.
    config = _config(tmp_path, recycle_after_jobs=50, memory_interval=0.02, per_connection_concurrency=3)
    async with ResourcePool(config, memory_sampler=_host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await pool.load_model("toy-mlp", connection_id="conn-1")
        watcher = OutWatcher(pool)
        outcomes = await asyncio.wait_for(_clients(pool, 600, 6, watcher, 4), 120)
        most_out = await watcher.stop()
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert failed == []
        assert len(outcomes) >= 600
        await pool.flush()
        recycles = [e async for e in pool.store.iter_all() if e.type == "RecycleStarted"]
        assert len(recycles) >= 4
        assert {e.connection_id for e in recycles} == {"conn-0", "conn-1"}
        assert most_out <= 1
        assert pool.counters["failed"] == 0


async def test_a_request_waits_for_the_connection_being_recycled(tmp_path: Path) -> None:
    """With one connection draining for a restart, a request waits for it and is served."""
    async with ResourcePool(_config(tmp_path, connections=1), memory_sampler=_host) as pool:
        await pool.load_model("toy-mlp")
        assert pool.recycle("conn-0", "test")
        assert pool.healthy_connections == []
        result = await pool.run_inference("toy-mlp", {"input": X}, deadline=20.0)
        assert result.connection_id == "conn-0"
        assert pool.counters["failed"] == 0


async def test_a_second_recycle_waits_its_turn(tmp_path: Path) -> None:
    """While one connection is out for a recycle, recycling the other is refused (to be asked again)."""
    async with ResourcePool(_config(tmp_path), memory_sampler=_host) as pool:
        await pool.load_model("toy-mlp")
        assert pool.recycle("conn-0", "test")
        assert not pool.recycle("conn-1", "test")
        task = pool.members["conn-0"].recycling
        assert task is not None
        await task
        assert pool.recycle("conn-1", "test")


async def test_rolling_restart_keeps_serving(tmp_path: Path) -> None:
    """A rolling restart restarts each connection in turn while 300 requests are all served."""
    async with ResourcePool(_config(tmp_path, connections=3), memory_sampler=_host) as pool:
        await pool.load_model("toy-mlp")
        watcher = OutWatcher(pool)
        load = asyncio.ensure_future(_clients(pool, 300, 6))
        restarted = await pool.rolling_restart()
        outcomes = await load
        most_out = await watcher.stop()
        assert sorted(restarted) == ["conn-0", "conn-1", "conn-2"]
        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        assert most_out <= 1
        await pool.flush()
        drains = [e.connection_id async for e in pool.store.iter_all() if e.type == "DrainStarted"]
        assert sorted(drains) == ["conn-0", "conn-1", "conn-2"]


def test_the_rolling_restart_command_keeps_serving(tmp_path: Path, capsys: Any) -> None:
    """``poolwarden rolling-restart --workers simulated`` restarts each connection, fails none, exits 0."""
    import json

    from poolwarden.cli import main

    code = main(["rolling-restart", "--workers", "simulated", "--db", str(tmp_path / "r.db"), "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert report["restarted"] == ["conn-0", "conn-1"]
    assert report["failed"] == 0
    assert report["served"] > 0
