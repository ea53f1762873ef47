"""``poolwarden rolling-restart``: restart every browser of a pool in turn while it serves.

A pool is started, clients send requests (each answer checked against numpy), and
:meth:`~poolwarden.pool.ResourcePool.rolling_restart` drains and restarts one connection at a
time (``PoolConfig.max_out_for_maintenance``). The report says which connections restarted, how
long each took, and how many requests were served and failed: failed must be 0.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import numpy as np

from poolwarden.errors import PoolwardenError
from poolwarden.workers.choice import resolve_workers
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model

__all__ = ["run_rolling_restart"]


async def run_rolling_restart(
    *, workers: str = "auto", connections: int = 2, db: str = "poolwarden.db", clients: int = 4
) -> dict[str, Any]:
    """Start a pool, serve ``clients`` loops of requests, restart each connection in turn; report."""
    from poolwarden.pool import PoolConfig, ResourcePool

    kind, why = resolve_workers(workers)
    print(f"poolwarden rolling-restart: {why}", file=sys.stderr)
    config = PoolConfig(connections=connections, workers=(kind,), db=db, hooks=kind != "simulated")
    spec = resolve_model("toy-mlp")
    x = np.linspace(-1, 1, spec.input_width, dtype=np.float32).reshape(1, spec.input_width)
    expected = reference_forward(spec, x)
    tally = {"served": 0, "failed": 0, "wrong": 0}
    errors: dict[str, int] = {}
    async with ResourcePool(config) as pool:
        await pool.load_model("toy-mlp")
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                try:
                    result = await pool.run_inference("toy-mlp", {"input": x})
                except PoolwardenError as error:
                    tally["failed"] += 1
                    errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                    continue
                if np.allclose(result.outputs[0], expected, rtol=RTOL, atol=ATOL):
                    tally["served"] += 1
                else:
                    tally["wrong"] += 1

        work = [asyncio.create_task(client()) for _ in range(clients)]
        started = time.monotonic()
        try:
            restarted = await pool.rolling_restart()
        finally:
            stop.set()
            await asyncio.gather(*work)
        took = time.monotonic() - started
    return {
        "workers": kind,
        "connections": connections,
        "restarted": restarted,
        "seconds": round(took, 3),
        "served": tally["served"],
        "failed": tally["failed"],
        "wrong_results": tally["wrong"],
        "errors_by_kind": errors,
    }
