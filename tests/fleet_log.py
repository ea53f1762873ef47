"""A log two pools share, as a fleet's is: written by two real pools (simulated workers) and a
standalone breaker, with figures known in advance (``EXPECTED``)."""

from __future__ import annotations

import os

import pytest

import poolwarden
from poolwarden.errors import UnknownModel
from poolwarden.pool import PoolConfig, ResourcePool
from tests.pool_support import inject_and_recover

X = {"input": [[0.5] * 16]}

EXPECTED = {
    # pool: (connections, served, failed requests, faults, incidents recovered, open breakers)
    "main": {"connections": 1, "served": 3, "failed_requests": 1, "faults": 1, "recovered": 1, "open": 0},
    "east": {"connections": 2, "served": 5, "failed_requests": 2, "faults": 0, "recovered": 0, "open": 1},
}
"""What each pool did: requests served and failed (an unknown model), faults injected and the
incidents they began (each recovered), breakers open at the end (east's ``east.conn-0``, isolated
by hand). A standalone breaker, ``payments-api``, forced open, is no pool's."""


def _config(db: str | os.PathLike[str], name: str, connections: int) -> PoolConfig:
    return PoolConfig(
        name=name,
        connections=connections,
        workers=("simulated",),
        db=db,
        heartbeat_interval=0.2,
        memory_interval=3600.0,
    )


async def _requests(pool: ResourcePool, served: int, failed: int) -> None:
    for _ in range(served):
        await pool.run_inference("toy-mlp", X)
    for _ in range(failed):
        with pytest.raises(UnknownModel):
            await pool.run_inference("never-loaded", X)


async def write_fleet(db: str | os.PathLike[str]) -> None:
    """Run pools ``main`` (one connection) and ``east`` (two) at once on the log at ``db``."""
    main_figures, east_figures = EXPECTED["main"], EXPECTED["east"]
    async with (
        ResourcePool(_config(db, "main", main_figures["connections"])) as main_pool,
        ResourcePool(_config(db, "east", east_figures["connections"])) as east,
    ):
        for pool in (main_pool, east):
            await pool.load_model("toy-mlp")
        await _requests(main_pool, main_figures["served"], main_figures["failed_requests"])
        await _requests(east, east_figures["served"], east_figures["failed_requests"])
        await inject_and_recover(main_pool, "conn-0", "browser_kill")
        east.isolate("east.conn-0", who="ops", why="test")
    async with poolwarden.open_breakers(db) as named:
        named.breaker("payments-api").force_open(who="ops", why="test")
