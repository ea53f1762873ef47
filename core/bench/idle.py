"""What durable breakers cost while nothing happens: ``idle_cpu_pct`` of one core, with
``breakers`` breakers alive in a :class:`~poolwarden.aio.durable_breakers.DurableBreakers` on a
SQLite file, its background loop flushing every 0.25 s and polling every 0.5 s (the defaults).

Run in a fresh process (``python -m poolwarden.bench.idle N SECONDS``) so that nothing else of a
benchmark run shares its CPU time; prints one JSON object.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from poolwarden.aio.durable_breakers import DurableBreakers
from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.clock import system_clock
from poolwarden.storage import open_store

__all__ = ["idle_cpu"]


async def idle_cpu(breakers: int, seconds: float) -> dict[str, float]:
    """Create ``breakers`` named breakers (each with one event, persisted), then let the driver
    idle for ``seconds``; returns the share of a core the process used meanwhile."""
    with tempfile.TemporaryDirectory() as folder:
        async with open_store(Path(folder) / "idle.db") as store:
            registry = BreakerRegistry(clock=system_clock, rng=random.Random(0))
            async with DurableBreakers(store, registry) as durable:
                for i in range(breakers):
                    registry.named(f"api-{i}").trip("bench", "an event to persist")
                await durable.flush()
                # Settle first: the first poll reads back the events just written, and the
                # tasks of that big flush are still to be collected; then measure the idle loop.
                await durable.poll()
                gc.collect()
                cpu, wall = time.process_time(), time.perf_counter()
                await asyncio.sleep(seconds)  # the driver's loop runs meanwhile: that is the measure
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "idle_breakers": breakers,
        "idle_seconds": round(wall, 2),
        "idle_cpu_pct": round(100 * cpu / wall, 2),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(idle_cpu(int(sys.argv[1]), float(sys.argv[2])))))
