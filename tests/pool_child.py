"""A pool in a process of its own, for the ownership tests: it serves until its lease is lost.

Usage: python pool_child.py DB NAME LEASE_TTL

Starts a pool of two simulated workers named NAME on DB, prints ``started FENCE`` and then
serves requests one after another. When a request is refused because the pool lost its name
(``LeaseLost``), it prints ``lost``, closes the pool and prints what ``close()`` raised
(``closed LeaseLost`` or ``closed ok``). If the lease is already held it prints ``held HOLDER``.
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np

from poolwarden.errors import LeaseHeld, LeaseLost
from poolwarden.pool import PoolConfig, ResourcePool

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)


async def main(db: str, name: str, ttl: float) -> None:
    config = PoolConfig(
        name=name,
        lease_ttl=ttl,
        connections=2,
        workers=("simulated",),
        db=db,
        heartbeat_interval=30.0,
        memory_interval=3600.0,
    )
    pool = ResourcePool(config)
    try:
        await pool.start()
    except LeaseHeld as held:
        print(f"held {held.holder}", flush=True)
        return
    try:
        assert pool.lease_lost is None
        await pool.load_model("toy-mlp")
        print(f"started {pool.store.lease.fence}", flush=True)  # type: ignore[attr-defined]
        while True:
            try:
                await pool.run_inference("toy-mlp", {"input": X})
            except LeaseLost:
                print("lost", flush=True)
                break
            await asyncio.sleep(0.01)
    finally:
        try:
            await pool.close()
        except LeaseLost:
            print("closed LeaseLost", flush=True)
        else:
            print("closed ok", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
