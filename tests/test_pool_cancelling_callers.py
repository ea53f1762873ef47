"""A hundred pools closed under load from callers that cancel their requests at random points."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from poolwarden.breaker_events import STREAM_PREFIX, key_of_stream
from poolwarden.errors import PoolwardenError
from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.replay import level_of, restore
from poolwarden.storage import open_store

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
FAULTS = ("out_of_memory", "device_lost", "slow", "hang")
RUNS = 100


def _config(db: Path) -> PoolConfig:
    return PoolConfig(
        connections=2,
        workers=("simulated",),
        db=db,
        heartbeat_interval=30.0,  # the load decides what fails, not the heartbeats
        memory_interval=3600.0,
        attempt_timeout=0.05,
    )


async def _one_run(db: Path, rng: random.Random) -> dict[str, int]:
    """Start a pool, serve callers of which many are cancelled mid-request, close it; return
    how many callers were cancelled. close() raising fails the test."""
    pool = ResourcePool(_config(db), rng=random.Random(rng.random()))
    await pool.start()
    try:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await pool.load_model("toy-mlp", connection_id="conn-1")
        for member in pool.members.values():
            worker = member.handle.worker  # type: ignore[attr-defined]
            await worker.inject(rng.choice(FAULTS), count=rng.randint(1, 6), seconds=0.03)

        async def caller() -> None:
            for _ in range(rng.randint(1, 4)):
                with contextlib.suppress(PoolwardenError):  # typed refusals are fine here
                    await pool.run_inference("toy-mlp", {"input": X}, deadline=0.2)

        callers = [asyncio.create_task(caller()) for _ in range(rng.randint(4, 12))]
        for task in rng.sample(callers, k=len(callers) // 2 + 1):
            await asyncio.sleep(rng.uniform(0, 0.01))  # a random point of a request
            task.cancel()
        await asyncio.sleep(rng.uniform(0, 0.02))
    finally:
        await pool.close()  # the test: this never raises, whatever callers were doing
    cancelled = 0
    for task in callers:
        if not task.done():
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            cancelled += 1
        except PoolwardenError:
            pass
    return {"cancelled": cancelled, "callers": len(callers)}


async def _check_log(db: Path, reference: ResourcePool) -> None:
    with sqlite3.connect(db) as raw:
        for stream, count, low, high in raw.execute(
            "SELECT stream, COUNT(*), MIN(version), MAX(version) FROM events GROUP BY stream"
        ):
            assert (count, low, high) == (high, 1, count), f"{stream}: versions not contiguous"
        stopped = raw.execute("SELECT COUNT(*) FROM events WHERE type = 'PoolStopped'").fetchone()[0]
        assert stopped == 1
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    async with open_store(db, read_only=True) as store:
        heads = await store.streams(STREAM_PREFIX)
        snapshots = await store.load_snapshots(STREAM_PREFIX)
        assert heads.keys() == snapshots.keys()  # close snapshots every breaker, at its head
        for stream, snapshot in snapshots.items():
            assert snapshot.version == heads[stream], stream
            records = await store.read_stream(stream)
            key = key_of_stream(stream)
            level = level_of(records[0].connection_id, records[0].model_id)
            replayed = restore(
                key,
                records,
                policy=reference.registry.policy_for(key, level),
                clock=reference.clock,
                rng=random.Random(0),
                catch_up=False,
            )
            assert replayed.snapshot() == snapshot.state, stream


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_close_never_raises_under_cancelling_callers(tmp_path: Path) -> None:
    """100 times: a pool on an SQLite file serves callers of which many are cancelled at random
    points of their requests, then closes. close() never raises; each stream's versions are
    contiguous, PoolStopped is recorded once, and each breaker's closing snapshot is what
    replaying its stream gives."""
    rng = random.Random(11)
    started = time.monotonic()
    totals = {"cancelled": 0, "callers": 0, "breaker_events": 0}
    for run in range(RUNS):
        db = tmp_path / f"run-{run}.db"
        figures = await _one_run(db, rng)
        totals["cancelled"] += figures["cancelled"]
        totals["callers"] += figures["callers"]
        await _check_log(db, ResourcePool(_config(db)))
        with sqlite3.connect(db) as raw:
            totals["breaker_events"] += raw.execute(
                "SELECT COUNT(*) FROM events WHERE stream LIKE 'breaker/%'"
            ).fetchone()[0]
    print(totals, f"{time.monotonic() - started:.1f} s")
    assert totals["cancelled"] >= RUNS  # the load really cancelled callers mid-request
    assert totals["breaker_events"] >= RUNS  # and breakers were writing when the pools closed
