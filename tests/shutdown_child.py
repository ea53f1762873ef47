"""A process whose pool is left by an exception, a cancellation, or never closed at all.

Usage: python shutdown_child.py DB MODE SEED, MODE one of:

- ``raise``: an exception escapes ``async with ResourcePool(...)`` while requests and faults keep
  its breakers writing events;
- ``cancel``: the task inside the block is cancelled from outside;
- ``noclose``: ``pool.start()`` without ``close()``, and ``main`` raises, so that ``asyncio.run``
  tears the loop down under a running pool.

It prints ``escaped`` once the exception (or cancellation) has reached ``asyncio.run``'s caller
and exits 0; a hang is the parent's timeout.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import numpy as np

from poolwarden.pool import PoolConfig, ResourcePool

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
FAULTS = ("out_of_memory", "device_lost", "slow", "drop")


class Escaped(Exception):
    """The exception that leaves the pool's block."""


def _config(db: Path) -> PoolConfig:
    return PoolConfig(
        connections=2, workers=("simulated",), db=db, heartbeat_interval=0.2, memory_interval=0.1
    )


async def _load(pool: ResourcePool, rng: random.Random) -> None:
    """Requests on eight callers and faults on random workers, until the task is cancelled."""

    async def caller() -> None:
        while True:
            try:
                await pool.run_inference("toy-mlp", {"input": X}, deadline=0.5)
            except Exception:
                await asyncio.sleep(0.001)

    async def faults() -> None:
        while True:
            member = pool.members.get(rng.choice(list(pool.members)))
            worker = getattr(member.handle, "worker", None) if member is not None else None
            if worker is not None:
                await worker.inject(rng.choice(FAULTS), count=3, seconds=0.05)
            await asyncio.sleep(rng.uniform(0.005, 0.03))

    async with asyncio.TaskGroup() as group:
        for _ in range(8):
            group.create_task(caller())
        group.create_task(faults())


async def _serve_then(pool: ResourcePool, rng: random.Random, after: float) -> asyncio.Task[None]:
    """Load the model, start the load, return it after ``after`` seconds (still running)."""
    await pool.load_model("toy-mlp")
    load = asyncio.create_task(_load(pool, rng))
    await asyncio.sleep(after)
    if load.done():
        load.result()  # the load itself failed: say so rather than test nothing
    return load


async def main(db: Path, mode: str, seed: int) -> None:
    rng = random.Random(seed)
    after = rng.uniform(0.3, 0.8)
    if mode == "raise":
        async with ResourcePool(_config(db)) as pool:
            await _serve_then(pool, rng, after)
            raise Escaped("left the block")
    elif mode == "cancel":
        serving = asyncio.Event()

        async def inside() -> None:
            async with ResourcePool(_config(db)) as pool:
                await pool.load_model("toy-mlp")
                load = asyncio.create_task(_load(pool, rng))
                serving.set()
                await load

        task = asyncio.create_task(inside())
        # Cancelled ``after`` seconds into the load, however long the start took on a busy machine.
        await serving.wait()
        await asyncio.sleep(after)
        task.cancel()
        await task
    elif mode == "noclose":
        pool = ResourcePool(_config(db))
        await pool.start()
        await _serve_then(pool, rng, after)
        raise Escaped("left without close")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    try:
        asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
    except (Escaped, asyncio.CancelledError):
        print("escaped", flush=True)
