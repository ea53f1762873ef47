"""The resource pool on simulated workers: serving, failover, in-flight safety, memory, recycling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poolwarden.errors import (
    CircuitOpen,
    ConfigurationError,
    DeadlineExceeded,
    InvalidInput,
    MemoryPressure,
    QueueFull,
    RequestError,
    UnknownModel,
)
from poolwarden.lifecycle_types import Suspected
from poolwarden.memory import EvictModel, HostReading, RecycleBrowser
from poolwarden.outliers import OutlierPolicy
from poolwarden.policy import BreakerPolicy, ErrorKind
from poolwarden.pool import ResourcePool
from poolwarden.pool.member import PoolMember
from poolwarden.storage import open_store
from poolwarden.workers.models import reference_forward, resolve_model
from poolwarden.workers.simulated import Fault
from tests.pool_support import X
from tests.pool_support import pool_config as _config


class Readings:
    """Injected memory readings: the host's percent, and each connection's browser PSS in MB."""

    def __init__(self) -> None:
        self.percent = 40.0
        self.pss_mb: dict[str, float] = {}

    async def host(self) -> HostReading:
        return HostReading(percent=self.percent, available_mb=1000, total_mb=16000)

    async def browser(self, member: PoolMember) -> int | None:
        mb = self.pss_mb.get(member.connection_id)
        return None if mb is None else int(mb * 2**20)


@pytest.fixture
def readings() -> Readings:
    return Readings()


@pytest.fixture
async def pool(tmp_path: Path, readings: Readings) -> AsyncIterator[ResourcePool]:
    async with ResourcePool(
        _config(tmp_path), memory_sampler=readings.host, browser_memory=readings.browser
    ) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        yield pool


def _expected() -> np.ndarray[Any, Any]:
    return reference_forward(resolve_model("toy-mlp"), X)


def _worker(pool: ResourcePool, connection_id: str) -> Any:
    return pool.members[connection_id].handle.worker  # type: ignore[attr-defined]


async def _events(pool: ResourcePool, type: str) -> list[Any]:
    await pool.flush()
    return [e async for e in pool.store.iter_all() if e.type == type]


async def test_serves_the_model_and_the_numbers_are_right(pool: ResourcePool) -> None:
    """A request is served on the connection holding the model, with the numpy reference's numbers."""
    result = await pool.run_inference("toy-mlp", {"input": X})
    assert result.connection_id == "conn-0"
    assert result.backend == "simulated"
    np.testing.assert_allclose(result.outputs[0], _expected(), rtol=1e-5, atol=1e-6)
    (served,) = await _events(pool, "InferencesServed")  # a first-attempt success is summarised
    assert (served.connection_id, served.model_id, served.outcome) == ("conn-0", "toy-mlp", "success")
    assert served.payload["n"] == 1
    assert served.payload["backend"] == "simulated"
    assert served.payload["latency_ms"] == [round(result.latency_ms, 3)]
    assert await _events(pool, "InferenceServed") == []


async def test_every_request_is_its_own_event_when_configured(tmp_path: Path, readings: Readings) -> None:
    """With record_every_request, each success is one InferenceServed event with its latency."""
    config = _config(tmp_path, record_every_request=True)
    async with ResourcePool(config, memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        results = [await pool.run_inference("toy-mlp", {"input": X}) for _ in range(3)]
        served = await _events(pool, "InferenceServed")
        assert [e.latency_ms for e in served] == [r.latency_ms for r in results]
        assert await _events(pool, "InferencesServed") == []


async def test_bad_requests_get_typed_errors_and_the_pool_keeps_serving(pool: ResourcePool) -> None:
    """Unknown models, misshapen or non-finite inputs raise typed errors; the next request is served."""
    with pytest.raises(UnknownModel):
        await pool.run_inference("no-such-model", {"input": X})
    with pytest.raises(InvalidInput, match="last axis must be 16"):
        await pool.run_inference("toy-mlp", {"input": [[1.0, 2.0]]})
    with pytest.raises(InvalidInput, match="NaN"):
        await pool.run_inference("toy-mlp", {"input": [[float("nan")] * 16]})
    with pytest.raises(UnknownModel):
        await pool.load_model("not-built-in")
    assert (await pool.run_inference("toy-mlp", {"input": X})).connection_id == "conn-0"


async def test_fails_over_when_a_connection_breaker_is_open(pool: ResourcePool) -> None:
    """With conn-0's breaker open, the request goes to conn-1 (which loads the model) and is served."""
    pool.registry.connection("conn-0").force_open("test", "simulate a sick connection")
    result = await pool.run_inference("toy-mlp", {"input": X})
    assert result.connection_id == "conn-1"
    np.testing.assert_allclose(result.outputs[0], _expected(), rtol=1e-5, atol=1e-6)
    placed = [e.connection_id for e in await _events(pool, "ModelPlaced")]
    assert placed == ["conn-0", "conn-1"]


async def test_failures_trip_the_breaker_and_traffic_moves(tmp_path: Path, readings: Readings) -> None:
    """Repeated device-lost errors on conn-0 open its breaker; later requests are served by conn-1."""
    config = _config(tmp_path, connection_breaker=BreakerPolicy(consecutive_failures=2))
    async with ResourcePool(config, memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await _worker(pool, "conn-0").inject(Fault.DEVICE_LOST, count=2)
        first = await pool.run_inference("toy-mlp", {"input": X})
        assert first.connection_id == "conn-1"  # the failed attempt was retried on conn-1
        assert first.attempts == 2
        await pool.members["conn-0"].driver.wait_for(lambda m: m.incident_id is None)  # type: ignore[union-attr]
        second = await pool.run_inference("toy-mlp", {"input": X})
        third = await pool.run_inference("toy-mlp", {"input": X})
        failed = await _events(pool, "CallFailed")
        assert {e.connection_id for e in failed} == {"conn-0"}
        # conn-0 failed twice in a row (first request, then the lifecycle-verified retry sent
        # back to it or not): whichever way, when its breaker is open nothing is routed there.
        if str(pool.registry.connection("conn-0").state) == "open":
            assert second.connection_id == third.connection_id == "conn-1"


async def test_no_request_is_lost_when_a_connection_dies_with_requests_in_flight(pool: ResourcePool) -> None:
    """Requests in flight on a worker that crashes are retried elsewhere or get a typed error; none hang."""
    worker = _worker(pool, "conn-0")
    await worker.inject(Fault.SLOW, count=50, seconds=0.5)
    requests = [asyncio.create_task(pool.run_inference("toy-mlp", {"input": X})) for _ in range(12)]
    member = pool.members["conn-0"]
    await asyncio.wait_for(member.wait_until(lambda m: m.in_flight >= 4), 10)  # work really in flight
    await pool.inject_fault("conn-0", "browser_kill")
    outcomes = await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), timeout=30)
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(e, RequestError) for e in errors), errors
    assert len(served) + len(errors) == 12
    assert any(r.connection_id == "conn-1" and r.attempts >= 2 for r in served), "in-flight work moved"
    for result in served:
        np.testing.assert_allclose(result.outputs[0], _expected(), rtol=1e-5, atol=1e-6)


async def test_queue_full_is_a_typed_refusal(tmp_path: Path, readings: Readings) -> None:
    """Beyond max_queue, a request is refused at once with QueueFull and a retry_after."""
    async with ResourcePool(_config(tmp_path, max_queue=2), memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await _worker(pool, "conn-0").inject(Fault.SLOW, count=10, seconds=0.3)
        pool.registry.connection("conn-1").force_open("test", "keep traffic on conn-0")
        slow = [asyncio.create_task(pool.run_inference("toy-mlp", {"input": X})) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as caught:
            await pool.run_inference("toy-mlp", {"input": X})
        assert caught.value.retry_after > 0
        await asyncio.gather(*slow)


async def test_warning_pressure_refuses_new_model_loads(pool: ResourcePool, readings: Readings) -> None:
    """At 85 % host memory, loading a model raises a typed error and the refusal is an event."""
    readings.percent = 85.0
    await pool.check_memory()
    with pytest.raises(MemoryPressure, match="memory pressure warning") as caught:
        await pool.load_model("matmul", options={"k": 4, "n": 4})
    assert (caught.value.percent, caught.value.threshold) == (85.0, 80.0)
    refused = await _events(pool, "ModelLoadRefused")
    assert [e.model_id for e in refused] == ["matmul"]
    # Already loaded models keep serving.
    assert (await pool.run_inference("toy-mlp", {"input": X})).connection_id == "conn-0"


async def test_critical_pressure_evicts_idle_models_and_recycles_the_largest_browser(
    pool: ResourcePool, readings: Readings
) -> None:
    """At 95 %, idle models but each connection's newest are unloaded and the browser holding the
    most memory is recycled."""
    await pool.load_model("matmul", options={"k": 4, "n": 4}, connection_id="conn-1")
    await pool.load_model("old", kind="matmul", options={"k": 4, "n": 4}, connection_id="conn-0")
    await pool.run_inference("toy-mlp", {"input": X})  # toy-mlp is conn-0's newest now
    readings.pss_mb = {"conn-0": 300.0, "conn-1": 900.0}
    readings.percent = 95.0
    actions = await pool.check_memory()
    assert EvictModel("conn-0", "old", "critical memory pressure: least recently used idle model") in actions
    assert RecycleBrowser("conn-1", "critical memory pressure: the browser holding the most") in actions
    assert "old" not in pool.members["conn-0"].models
    assert "toy-mlp" in pool.members["conn-0"].models
    evicted = await _events(pool, "ModelEvicted")
    assert {(e.connection_id, e.model_id) for e in evicted} == {("conn-0", "old")}
    member = pool.members["conn-1"]
    await member.driver.wait_for(lambda m: m.incident_id is None and str(m.state.value) == "healthy")  # type: ignore[union-attr]
    drains = await _events(pool, "DrainStarted")
    assert [e.connection_id for e in drains] == ["conn-1"]


async def test_recycling_drains_in_flight_work_before_restarting(pool: ResourcePool) -> None:
    """A recycled connection finishes its in-flight requests, takes no new ones, then restarts."""
    await _worker(pool, "conn-0").inject(Fault.SLOW, count=3, seconds=0.4)
    in_flight = [asyncio.create_task(pool.run_inference("toy-mlp", {"input": X})) for _ in range(3)]
    member = pool.members["conn-0"]
    await asyncio.wait_for(member.wait_until(lambda m: m.in_flight >= 3), 10)
    pool.recycle("conn-0", "test")
    assert not member.serving
    during = await pool.run_inference("toy-mlp", {"input": X})
    assert during.connection_id == "conn-1"  # nothing new goes to a draining connection
    results = await asyncio.gather(*in_flight)
    assert [r.connection_id for r in results] == ["conn-0"] * 3  # in-flight work finished there
    await member.driver.wait_for(lambda m: m.incident_id is None and str(m.state.value) == "healthy")  # type: ignore[union-attr]
    await pool.flush()
    stream = [e.type for e in await pool.store.read_stream("connection/conn-0")]
    drain, restart = stream.index("DrainStarted"), stream.index("RungAttempted", stream.index("DrainStarted"))
    assert drain < restart
    served_after = await _events(pool, "InferencesServed")
    last_served_on_conn0 = max(e.payload["last_at"] for e in served_after if e.connection_id == "conn-0")
    (restart_event,) = [
        e for e in await pool.store.read_stream("connection/conn-0") if e.type == "RungAttempted"
    ]
    # Every in-flight answer came before the restart (by the clock: the pool's events are
    # appended in batches, so their positions may come after the lifecycle's).
    assert last_served_on_conn0 <= restart_event.occurred_at
    again = await pool.run_inference("toy-mlp", {"input": X})
    assert again.outputs[0].shape == (1, 4)


async def test_circuit_open_everywhere_is_a_typed_error_with_retry_at(
    tmp_path: Path, readings: Readings
) -> None:
    """When every connection's breaker is forced open (and panic routing is off), CircuitOpen says when."""
    async with ResourcePool(_config(tmp_path, max_ejection_share=1.0), memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        for connection_id in pool.members:
            pool.registry.connection(connection_id).force_open("test", "isolate")
        with pytest.raises(CircuitOpen):
            await pool.run_inference("toy-mlp", {"input": X})


async def test_panic_routing_serves_from_the_least_bad_when_too_much_is_ejected(
    tmp_path: Path, readings: Readings
) -> None:
    """Above max_ejection_share, the pool serves from a holder of the model despite its open breaker."""
    async with ResourcePool(_config(tmp_path, max_ejection_share=0.5), memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        for connection_id in pool.members:  # tripped open (a person's force_open would win)
            breaker = pool.registry.connection(connection_id)
            for _ in range(breaker.policy.consecutive_failures or 5):
                breaker.record_failure(ErrorKind.TRANSPORT, 0.01)
        result = await pool.run_inference("toy-mlp", {"input": X})
        np.testing.assert_allclose(result.outputs[0], _expected(), rtol=1e-5, atol=1e-6)
        assert [e.connection_id for e in await _events(pool, "PanicRouted")] == [result.connection_id]


async def test_requests_wait_in_the_queue_for_a_free_slot(tmp_path: Path, readings: Readings) -> None:
    """With every slot busy, further requests wait (not refused) and are all served as slots free up."""
    config = _config(tmp_path, per_connection_concurrency=1, max_queue=8)
    async with ResourcePool(config, memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await pool.load_model("toy-mlp", connection_id="conn-1")
        for connection_id in ("conn-0", "conn-1"):
            await _worker(pool, connection_id).inject(Fault.SLOW, count=2, seconds=0.2)
        requests = [asyncio.create_task(pool.run_inference("toy-mlp", {"input": X})) for _ in range(6)]
        members = list(pool.members.values())
        await asyncio.wait_for(members[0].wait_until(lambda m: m.in_flight == 1), 10)
        await asyncio.wait_for(members[1].wait_until(lambda m: m.in_flight == 1), 10)
        assert max(m.in_flight for m in members) == 1  # the other four wait in the pool's queue
        results = await asyncio.wait_for(asyncio.gather(*requests), 30)
        for result in results:
            np.testing.assert_allclose(result.outputs[0], _expected(), rtol=1e-5, atol=1e-6)
        assert {r.connection_id for r in results} == {"conn-0", "conn-1"}


async def test_a_deadline_passing_in_the_queue_is_deadline_exceeded(
    tmp_path: Path, readings: Readings
) -> None:
    """A request still waiting for a slot at its deadline gets DeadlineExceeded; the busy one finishes."""
    config = _config(tmp_path, connections=1, per_connection_concurrency=1)
    async with ResourcePool(config, memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await _worker(pool, "conn-0").inject(Fault.SLOW, count=1, seconds=0.5)
        busy = asyncio.create_task(pool.run_inference("toy-mlp", {"input": X}))
        await asyncio.wait_for(pool.members["conn-0"].wait_until(lambda m: m.in_flight == 1), 10)
        with pytest.raises(DeadlineExceeded):
            await pool.run_inference("toy-mlp", {"input": X}, deadline=0.05)
        assert (await busy).connection_id == "conn-0"
        failed = await _events(pool, "InferenceFailed")
        assert [e.error_kind for e in failed] == ["DeadlineExceeded"]


async def test_a_request_cut_by_its_own_deadline_is_not_held_against_the_connection(
    tmp_path: Path, readings: Readings
) -> None:
    """An attempt cut short by the caller's deadline (not the attempt timeout) counts no breaker failure."""
    async with ResourcePool(_config(tmp_path, connections=1), memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await _worker(pool, "conn-0").inject(Fault.SLOW, count=1, seconds=0.5)
        with pytest.raises(DeadlineExceeded) as caught:
            await pool.run_inference("toy-mlp", {"input": X}, deadline=0.1)
        assert caught.value.attempted == ()  # type: ignore[attr-defined]  # no breaker recorded a failure
        await pool.breakers.flush()
        assert await _events(pool, "CallFailed") == []
        assert await _events(pool, "AttemptFailed") == []
        breaker = pool.registry.connection("conn-0")
        assert str(breaker.state) == "closed"


async def test_a_verified_recovery_half_opens_the_connection_breaker(
    tmp_path: Path, readings: Readings
) -> None:
    """A breaker opened by a failing connection half-opens once its recovery verified a round trip."""
    config = _config(tmp_path, connection_breaker=BreakerPolicy(consecutive_failures=1))
    async with ResourcePool(config, memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await _worker(pool, "conn-0").inject(Fault.DEVICE_LOST, count=1)
        first = await pool.run_inference("toy-mlp", {"input": X})
        assert (first.connection_id, first.attempts) == ("conn-1", 2)  # conn-0 failed: its breaker opened
        driver = pool.members["conn-0"].driver
        assert driver is not None
        await driver.wait_for(lambda m: m.incident_id is None)  # the device-lost recovery ended
        breaker = pool.registry.connection("conn-0")
        assert str(breaker.state) == "half_open"  # long before its retry_at
        assert breaker.retry_at is not None
        assert breaker.retry_at > pool.clock() + 1
        await pool.breakers.flush()
        stream = [e async for e in pool.store.iter_all() if e.stream == "breaker/conn-0"]
        assert [e.type for e in stream][-2:] == ["BreakerOpened", "BreakerHalfOpened"]
        assert "verified a round trip" in stream[-1].payload["reason"]
        pool.registry.connection("conn-1").force_open("test", "only conn-0 may serve")
        trial = await pool.run_inference("toy-mlp", {"input": X})
        assert trial.connection_id == "conn-0"  # the half-open breaker admitted a trial


async def test_placement_starts_from_what_the_log_recorded(tmp_path: Path, readings: Readings) -> None:
    """A new pool on an old log weighs the successes and failures earlier runs recorded."""
    async with ResourcePool(_config(tmp_path), memory_sampler=readings.host) as first:
        await first.load_model("toy-mlp", model_type="vision", connection_id="conn-0")
        await _worker(first, "conn-0").inject(Fault.DEVICE_LOST, count=1)
        results = [await first.run_inference("toy-mlp", {"input": X}) for _ in range(5)]
        live = first.stats.get("vision", "simulated")
        assert live is not None
        assert (live.requests, live.successes) == (6, 5)  # five served, one failed attempt
    async with ResourcePool(_config(tmp_path), memory_sampler=readings.host) as second:
        restored = second.stats.get("vision", "simulated")
        assert restored is not None
        assert (restored.requests, restored.successes) == (6, 5)
        assert restored.latency_ms_total == pytest.approx(sum(r.latency_ms for r in results), abs=0.01)
    history_off = _config(tmp_path, placement_history_s=None)
    async with ResourcePool(history_off, memory_sampler=readings.host) as third:
        assert third.stats.get("vision", "simulated") is None


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("connections", 0, "at least one connection"),
        ("workers", ("netscape",), "workers must be"),
        ("max_queue", 0, "max_queue"),
        ("max_ejection_share", 0.0, "max_ejection_share"),
        ("attempt_timeout", 0.0, "positive"),
        ("metrics_interval", -1.0, "positive"),
        ("metrics_port", 70_000, "metrics_port"),
        ("placement_history_s", 0.0, "placement_history_s"),
    ],
)
def test_a_config_that_cannot_work_is_refused(tmp_path: Path, option: str, value: Any, message: str) -> None:
    """Each impossible setting is a ConfigurationError naming it, before anything starts."""
    with pytest.raises(ConfigurationError, match=message):
        _config(tmp_path, **{option: value})


async def test_closing_the_pool_records_each_connections_closing(tmp_path: Path, readings: Readings) -> None:
    """After close(), every connection's stream ends in ConnectionClosed (to CLOSED), one of
    them closed in the middle of a recovery, which the closing abandons."""
    pool = ResourcePool(_config(tmp_path), memory_sampler=readings.host, browser_memory=readings.browser)
    await pool.start()
    try:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await pool.run_inference("toy-mlp", {"input": X})
        await _worker(pool, "conn-1").inject(Fault.HANG, seconds=30.0)  # conn-1 stops answering
        driver = pool.members["conn-1"].driver
        assert driver is not None
        driver.fault(Suspected())
        await driver.wait_for(lambda m: m.incident_id is not None)
    finally:
        await pool.close()
    async with open_store(tmp_path / "pool.db", read_only=True) as store:
        for connection_id in ("conn-0", "conn-1"):
            last = (await store.read_stream(f"connection/{connection_id}"))[-1]
            assert (last.type, last.to_state) == ("ConnectionClosed", "closed"), connection_id
        (stopped,) = [e async for e in store.iter_all() if e.type == "PoolStopped"]
        assert stopped.position > last.position  # the connections closed before the pool stopped


def test_a_seeded_pool_seeds_its_breakers_jitter(tmp_path: Path) -> None:
    """Two pools given the same seeded source give their breakers the same random sequence."""
    import random

    first = ResourcePool(_config(tmp_path), rng=random.Random(5))
    second = ResourcePool(_config(tmp_path), rng=random.Random(5))
    other = ResourcePool(_config(tmp_path), rng=random.Random(6))
    draws = [[pool.registry.rng.random() for _ in range(3)] for pool in (first, second, other)]
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]


async def test_an_outlier_connection_is_ejected_as_an_event_and_traffic_moves(
    tmp_path: Path, readings: Readings
) -> None:
    """With outlier detection on, conn-0 failing far more than conn-1 is ejected (ConnectionEjected)
    and the next request goes to conn-1 though conn-0 holds the model."""
    policy = OutlierPolicy(
        interval=0.001,
        success_rate_stdev_factor=None,
        failure_percentage_threshold=0.5,
        failure_percentage_min_hosts=2,
        failure_percentage_request_volume=5,
    )
    async with ResourcePool(_config(tmp_path, outliers=policy), memory_sampler=readings.host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        assert pool.outliers is not None
        for _ in range(5):  # as the request path records them
            pool.outliers.record("conn-0", False, 0.1)
            pool.outliers.record("conn-1", True, 0.1)
        await asyncio.sleep(0.01)
        result = await pool.run_inference("toy-mlp", {"input": X})
        assert result.connection_id == "conn-1"
        (ejected,) = await _events(pool, "ConnectionEjected")
        assert ejected.connection_id == "conn-0"
        assert ejected.payload["rule"] == "failure_percentage"
