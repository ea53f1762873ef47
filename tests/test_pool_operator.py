"""A person's decision wins over panic routing: an isolated connection never gets panic traffic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from poolwarden.errors import CircuitOpen, IsolatedByOperator
from poolwarden.policy import ErrorKind
from poolwarden.pool import ResourcePool
from tests.pool_support import X
from tests.pool_support import pool_config as _config
from tests.pool_support import steady_host as _host


async def _types(pool: ResourcePool, type: str) -> list[Any]:
    await pool.flush()
    return [e async for e in pool.store.iter_all() if e.type == type]


async def test_isolation_beats_panic(tmp_path: Path) -> None:
    """Every connection isolated by an operator: no panic route, a typed IsolatedByOperator naming
    them, and nothing reached a worker."""
    async with ResourcePool(_config(tmp_path), memory_sampler=_host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await pool.load_model("toy-mlp", connection_id="conn-1")
        pool.isolate("conn-0", "ops", "maintenance")
        pool.isolate("conn-1", "ops", "maintenance")
        for _ in range(5):
            with pytest.raises(IsolatedByOperator) as caught:
                await pool.run_inference("toy-mlp", {"input": X}, deadline=2.0)
            assert isinstance(caught.value, CircuitOpen)
            assert set(caught.value.connections) == {"conn-0", "conn-1"}
        assert await _types(pool, "PanicRouted") == []
        assert all(m.jobs == 0 for m in pool.members.values())
        pool.release("conn-1", "ops", "done")
        assert (await pool.run_inference("toy-mlp", {"input": X})).connection_id == "conn-1"


async def test_panic_goes_only_to_a_connection_no_one_isolated(tmp_path: Path) -> None:
    """One connection isolated by hand, the other's breaker tripped open: panic routing serves
    from the tripped one, never from the isolated one."""
    async with ResourcePool(_config(tmp_path), memory_sampler=_host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await pool.load_model("toy-mlp", connection_id="conn-1")
        pool.isolate("conn-0", "ops", "suspect GPU")
        tripped = pool.registry.connection("conn-1")
        for _ in range(tripped.policy.consecutive_failures or 5):
            tripped.record_failure(ErrorKind.TRANSPORT, 0.01)
        assert str(tripped.state) == "open"
        results = [await pool.run_inference("toy-mlp", {"input": X}) for _ in range(5)]
        assert {r.connection_id for r in results} == {"conn-1"}
        panics = await _types(pool, "PanicRouted")
        assert {e.connection_id for e in panics} == {"conn-1"}
        assert pool.members["conn-0"].jobs == 0
