"""A pool's workers made by a factory of the embedder's: every connection's handle comes from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from poolwarden.bridge.server import BridgeServer
from poolwarden.errors import ConfigurationError
from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.workers.handle import WorkerHandle
from poolwarden.workers.models import reference_forward, resolve_model
from poolwarden.workers.simulated_handle import SimulatedHandle

INPUT = {"input": np.ones((1, 16), dtype=np.float32)}


async def test_every_connection_gets_the_factorys_handle_and_serves(tmp_path: Path) -> None:
    made: list[tuple[str, str, WorkerHandle]] = []

    def factory(server: BridgeServer, kind: str, worker_id: str) -> WorkerHandle:
        handle = SimulatedHandle(server, worker_id)
        made.append((kind, worker_id, handle))
        return handle

    config = PoolConfig(connections=2, workers=("simulated",), db=tmp_path / "p.db")
    async with ResourcePool(config, worker_factory=factory) as pool:
        await pool.load_model("toy-mlp")
        result = await pool.run_inference("toy-mlp", INPUT)
        expected = reference_forward(resolve_model("toy-mlp"), INPUT["input"])
        got = np.asarray(result.outputs[0], dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert result.connection_id is not None
        handles = {member.connection_id: member.handle for member in pool.members.values()}
    assert sorted(worker_id for _, worker_id, _ in made) == sorted(handles)
    assert {kind for kind, _, _ in made} == {"simulated"}
    assert all(handles[worker_id] is handle for _, worker_id, handle in made)


def test_a_spare_from_a_factory_that_makes_no_browser_is_a_configuration_error(tmp_path: Path) -> None:
    """warm_spares with a factory whose workers are not browsers: a typed error that says so."""

    def factory(server: BridgeServer, kind: str, worker_id: str) -> WorkerHandle:
        return SimulatedHandle(server, worker_id)

    config = PoolConfig(workers=("chromium",), warm_spares=1, db=tmp_path / "p.db")
    pool = ResourcePool(config, worker_factory=factory)
    with pytest.raises(ConfigurationError, match="warm_spares needs chromium workers that are browsers"):
        pool._new_browser("chromium", "spare-0")
