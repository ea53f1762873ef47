"""Every error is an event: each typed error the pool makes, provoked, leaves its event in the log.

The first test walks the pool's modules for every place a request error is made (a call of a
``RequestError`` class) and fails when one has no scenario below; each scenario provokes it and
checks the event it left.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import poolwarden.errors as errors_module
from poolwarden.compat import ResourcePoolBridge, ResourcePoolErrorRecovery
from poolwarden.errors import (
    CircuitOpen,
    ConfigurationError,
    DeadlineExceeded,
    InvalidInput,
    IsolatedByOperator,
    MemoryPressure,
    ModelError,
    NoHealthyConnection,
    QueueFull,
    RequestError,
    UnknownModel,
)
from poolwarden.memory import HostReading
from poolwarden.policy import ErrorKind
from poolwarden.pool import ResourcePool
from poolwarden.workers.simulated import Fault
from tests.pool_support import X
from tests.pool_support import pool_config as _config

ROOT = Path(__file__).resolve().parent.parent
MODULES = [*sorted((ROOT / "core" / "pool").glob("*.py")), ROOT / "core" / "memory.py"]

COVERED = {
    "UnknownModel": "test_unknown_models_are_events",
    "InvalidInput": "test_invalid_input_is_an_event",
    "QueueFull": "test_queue_full_is_an_event",
    "CircuitOpen": "test_circuit_open_is_an_event",
    "IsolatedByOperator": "test_isolated_is_an_event",
    "DeadlineExceeded": "test_deadline_exceeded_is_an_event",
    "ModelError": "test_model_error_is_an_event",
    "NoHealthyConnection": "test_no_healthy_connection_is_an_event",
    "MemoryPressure": "test_memory_pressure_is_an_event",
}
"""Each request error the pool makes, and the test that provokes it here."""


def test_every_request_error_the_pool_makes_has_a_scenario() -> None:
    """Every RequestError class constructed in the pool's modules is provoked by a test here."""
    request_errors = {
        name
        for name, cls in vars(errors_module).items()
        if inspect.isclass(cls) and issubclass(cls, RequestError)
    }
    made = set()
    for module in MODULES:
        for node in ast.walk(ast.parse(module.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in request_errors
            ):
                made.add(node.func.id)
    assert made <= set(COVERED), f"no scenario for {sorted(made - set(COVERED))}"
    assert all(name in globals() for name in COVERED.values())


class Readings:
    def __init__(self) -> None:
        self.percent = 40.0

    async def host(self) -> HostReading:
        return HostReading(percent=self.percent, available_mb=1000, total_mb=16000)


@pytest.fixture
def readings() -> Readings:
    return Readings()


@pytest.fixture
async def pool(tmp_path: Path, readings: Readings) -> AsyncIterator[ResourcePool]:
    async with ResourcePool(_config(tmp_path), memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        yield pool


async def _events(pool: ResourcePool, type: str) -> list[Any]:
    await pool.flush()
    return [e async for e in pool.store.iter_all() if e.type == type]


async def _failed(pool: ResourcePool) -> list[tuple[str, str]]:
    return [(e.error_kind, e.outcome) for e in await _events(pool, "InferenceFailed")]


def _worker(pool: ResourcePool, connection_id: str) -> Any:
    return pool.members[connection_id].handle.worker  # type: ignore[attr-defined]


async def test_unknown_models_are_events(pool: ResourcePool) -> None:
    """A request for a model never loaded, and a load of a kind no worker has: each an event."""
    with pytest.raises(UnknownModel):
        await pool.run_inference("nope", {"input": X})
    with pytest.raises(UnknownModel):
        await pool.load_model("nope-either")
    assert await _failed(pool) == [("UnknownModel", "refused")]
    assert [e.error_kind for e in await _events(pool, "ModelLoadFailed")] == ["UnknownModel"]


async def test_invalid_input_is_an_event(pool: ResourcePool) -> None:
    """Misshapen inputs: InferenceFailed InvalidInput."""
    with pytest.raises(InvalidInput):
        await pool.run_inference("toy-mlp", {"input": [[1.0]]})
    assert await _failed(pool) == [("InvalidInput", "refused")]


async def test_queue_full_is_an_event(tmp_path: Path, readings: Readings) -> None:
    """Beyond max_queue: InferenceFailed QueueFull."""
    async with ResourcePool(_config(tmp_path, max_queue=1), memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await _worker(pool, "conn-0").inject(Fault.SLOW, count=1, seconds=0.3)
        slow = asyncio.ensure_future(pool.run_inference("toy-mlp", {"input": X}))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await pool.run_inference("toy-mlp", {"input": X})
        await slow
        assert await _failed(pool) == [("QueueFull", "refused")]


async def test_circuit_open_is_an_event(tmp_path: Path, readings: Readings) -> None:
    """Every breaker tripped open (panic off): InferenceFailed CircuitOpen."""
    config = _config(tmp_path, max_ejection_share=1.0)
    async with ResourcePool(config, memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        for connection_id in pool.members:
            breaker = pool.registry.connection(connection_id)
            for _ in range(breaker.policy.consecutive_failures or 5):
                breaker.record_failure(ErrorKind.TRANSPORT, 0.01)
        with pytest.raises(CircuitOpen):
            await pool.run_inference("toy-mlp", {"input": X})
        assert await _failed(pool) == [("CircuitOpen", "failed")]


async def test_isolated_is_an_event(pool: ResourcePool) -> None:
    """Every connection isolated by hand: InferenceFailed IsolatedByOperator."""
    for connection_id in pool.members:
        pool.isolate(connection_id, "ops", "test")
    with pytest.raises(IsolatedByOperator):
        await pool.run_inference("toy-mlp", {"input": X})
    assert await _failed(pool) == [("IsolatedByOperator", "failed")]


async def test_deadline_exceeded_is_an_event(pool: ResourcePool) -> None:
    """A request whose deadline passes: InferenceFailed DeadlineExceeded."""
    for connection_id in pool.members:
        await _worker(pool, connection_id).inject(Fault.SLOW, count=5, seconds=1.0)
    with pytest.raises(DeadlineExceeded):
        await pool.run_inference("toy-mlp", {"input": X}, deadline=0.2)
    assert await _failed(pool) == [("DeadlineExceeded", "failed")]


async def test_model_error_is_an_event(pool: ResourcePool) -> None:
    """A model error on the worker: AttemptFailed, then InferenceFailed ModelError."""
    await _worker(pool, "conn-0").inject(Fault.DEVICE_LOST, count=1)
    with pytest.raises(ModelError):
        await pool.run_inference("toy-mlp", {"input": X}, attempts=1)
    assert await _failed(pool) == [("ModelError", "failed")]
    assert [e.error_kind for e in await _events(pool, "AttemptFailed")] == ["device_lost"]


async def test_no_healthy_connection_is_an_event(pool: ResourcePool) -> None:
    """A load where no connection can take it: ModelLoadFailed NoHealthyConnection; a request
    where nothing serves: InferenceFailed NoHealthyConnection."""
    with pytest.raises(ConfigurationError):  # a caller's mistake, not a request's error
        pool.isolate("conn-9", "ops", "no such connection")
    for member in pool.members.values():
        member.recovery.driver.machine._record.state = type(member.state).FAILED  # type: ignore[union-attr]
    with pytest.raises(NoHealthyConnection):
        await pool.load_model("matmul", options={"k": 4, "n": 4})
    with pytest.raises(NoHealthyConnection):
        await pool.run_inference("toy-mlp", {"input": X})
    assert [e.error_kind for e in await _events(pool, "ModelLoadFailed")] == ["NoHealthyConnection"]
    assert await _failed(pool) == [("NoHealthyConnection", "failed")]


async def test_memory_pressure_is_an_event(pool: ResourcePool, readings: Readings) -> None:
    """Under pressure: a refused load is ModelLoadRefused; a request for a model loaded nowhere
    is InferenceFailed MemoryPressure."""
    await pool.load_model("matmul", options={"k": 4, "n": 4}, connection_id="conn-1")
    await pool.unload_model("matmul", "conn-1")
    readings.percent = 85.0
    await pool.check_memory()
    with pytest.raises(MemoryPressure):
        await pool.load_model("other", kind="matmul", options={"k": 4, "n": 4})
    with pytest.raises(MemoryPressure):
        await pool.run_inference("matmul", {"input": np.zeros((1, 4), np.float32)})
    assert [e.model_id for e in await _events(pool, "ModelLoadRefused")] == ["other", "matmul", "matmul"]
    assert await _failed(pool) == [("MemoryPressure", "failed")]


async def test_a_cancelled_request_is_recorded_as_cancelled(pool: ResourcePool) -> None:
    """A request its caller cancels: InferenceFailed with outcome cancelled."""
    await _worker(pool, "conn-0").inject(Fault.SLOW, count=1, seconds=5.0)
    request = asyncio.ensure_future(pool.run_inference("toy-mlp", {"input": X}))
    member = pool.members["conn-0"]
    await asyncio.wait_for(member.wait_until(lambda m: m.in_flight >= 1), 10)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert await _failed(pool) == [("CancelledError", "cancelled")]


async def test_a_model_load_on_a_hung_worker_is_an_event(tmp_path: Path, readings: Readings) -> None:
    """A load on a hung page fails after load_timeout with ModelLoadFailed and starts recovery."""
    config = _config(tmp_path, load_timeout=0.5)
    async with ResourcePool(config, memory_sampler=readings.host) as pool:
        await _worker(pool, "conn-0").inject(Fault.HANG, seconds=600)
        with pytest.raises(DeadlineExceeded):
            await pool.load_model("toy-mlp", connection_id="conn-0")
        (failed,) = await _events(pool, "ModelLoadFailed")
        assert (failed.connection_id, failed.error_kind) == ("conn-0", "DeadlineExceeded")
        assert 400 <= failed.latency_ms < 5000
        driver = pool.members["conn-0"].driver
        assert driver is not None
        await asyncio.wait_for(driver.wait_for(lambda m: m.last_incident_id is not None), 10)


async def test_a_compat_error_update_is_an_event(tmp_path: Path) -> None:
    """``update_circuit_breaker(success=False, error="invalid input ...")`` leaves AttemptFailed,
    though the breakers do not count an input error."""
    bridge = ResourcePoolBridge(max_connections=1, workers="simulated", db=str(tmp_path / "seed.db"))
    await bridge.initialize()
    try:
        await bridge.load_model("toy-mlp")
        connection = bridge.model_connections["toy-mlp"]
        ResourcePoolErrorRecovery.update_circuit_breaker(
            connection, False, "toy-mlp", error="invalid input shape"
        )
        events = await _events(bridge.pool, "AttemptFailed")
        assert [(e.connection_id, e.model_id, e.error_kind) for e in events] == [
            (connection.connection_id, "toy-mlp", "input")
        ]
    finally:
        await bridge.close()
