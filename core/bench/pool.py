"""``poolwarden bench pool``: inference through the pool against the bare bridge, same worker.

In one process: a pool of simulated workers serves ``requests`` toy-mlp requests from
``concurrency`` clients, through its queue, breakers, placement and event log; then the same
requests go straight over the same workers' WebSocket connections (request, binary tensor
frame, answer) with no pool in between. The two alternate for five rounds of ``requests / 5``
each. ``overhead_ratio`` is the pool's best round over the bare loop's best; both pay for the
same simulated worker in the same process, so it isolates the pool.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from poolwarden.pool import PoolConfig, ResourcePool

__all__ = ["run"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def _measure(requests: int, concurrency: int, connections: int, folder: Path) -> dict[str, Any]:
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    config = PoolConfig(
        connections=connections,
        workers=("simulated",),
        db=folder / "bench-pool.db",
        heartbeat_interval=60.0,
        memory_interval=3600.0,
    )
    async with ResourcePool(config) as pool:
        for member in pool.members.values():
            await pool.load_model("toy-mlp", connection_id=member.connection_id)
        connections_ = [member.connection for member in pool.members.values()]

        async def through_pool(latencies: list[float], count: int) -> None:
            for _ in range(count):
                began = time.perf_counter()
                await pool.run_inference("toy-mlp", {"input": x})
                latencies.append(time.perf_counter() - began)

        async def bare(latencies: list[float], count: int, index: int) -> None:
            connection = connections_[index % len(connections_)]
            for _ in range(count):
                began = time.perf_counter()
                await connection.infer("toy-mlp", {"input": x}, timeout=10.0)
                latencies.append(time.perf_counter() - began)

        rounds = 5
        per_client = max(1, requests // (concurrency * rounds))
        results: dict[str, Any] = {}
        # Warm both paths, then time them in alternation, five rounds each; each path's figure
        # is its best round (as timeit does), so that work of other processes during one round
        # shows in neither, and a machine slowing down or speeding up affects both alike.
        await asyncio.gather(*(through_pool([], 20) for _ in range(concurrency)))
        await asyncio.gather(*(bare([], 20, i) for i in range(concurrency)))
        timings: dict[str, list[float]] = {"pool": [], "bare": []}
        latencies: dict[str, list[float]] = {"pool": [], "bare": []}
        for name in ("pool", "bare") * rounds:
            started = time.perf_counter()
            if name == "pool":
                await asyncio.gather(*(through_pool(latencies[name], per_client) for _ in range(concurrency)))
            else:
                await asyncio.gather(*(bare(latencies[name], per_client, i) for i in range(concurrency)))
            timings[name].append(time.perf_counter() - started)
        done = per_client * concurrency
        pool_s = min(timings["pool"])
        bare_s = min(timings["bare"])
        results.update(
            requests=done * rounds,
            rounds=rounds,
            concurrency=concurrency,
            connections=connections,
            pool_requests_per_s=round(done / pool_s),
            bare_requests_per_s=round(done / bare_s),
            pool_p50_ms=round(_percentile(latencies["pool"], 0.5) * 1000, 3),
            pool_p99_ms=round(_percentile(latencies["pool"], 0.99) * 1000, 3),
            bare_p50_ms=round(_percentile(latencies["bare"], 0.5) * 1000, 3),
            bare_p99_ms=round(_percentile(latencies["bare"], 0.99) * 1000, 3),
            overhead_ratio=round(pool_s / bare_s, 3),
            served=pool.counters["served"],
        )
    return results


def run(requests: int = 20_000, concurrency: int = 16, connections: int = 2) -> dict[str, Any]:
    """Run the pool benchmark and return its figures."""
    with tempfile.TemporaryDirectory(prefix="poolwarden-bench-pool-") as folder:
        return asyncio.run(_measure(requests, concurrency, connections, Path(folder)))
