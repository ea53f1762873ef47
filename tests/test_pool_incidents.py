"""One incident id from signal to outcome: the fault, the attempts, the bridge's close, the breaker
decisions, the panic routes, the rungs and the outcome of one failure all carry it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from poolwarden.analysis import incident_chain, load_events
from poolwarden.clock import FakeClock
from poolwarden.errors import PoolwardenError
from poolwarden.memory import HostReading
from poolwarden.policy import ErrorKind
from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.pool.incidents import IncidentBook

X = np.zeros((1, 16), np.float32)


async def _host() -> HostReading:
    return HostReading(percent=40.0, available_mb=1000, total_mb=16000)


def _book(clock: FakeClock) -> IncidentBook:
    counter = itertools.count(1)
    return IncidentBook(clock, window=10.0, ids=lambda: f"i{next(counter)}")


def test_the_first_signal_opens_an_incident_the_recovery_adopts(clock: FakeClock) -> None:
    """Signals share the pending incident; the lifecycle adopts it; its end closes it."""
    book = _book(clock)
    assert book.current("c") is None
    assert book.signal("c") == "i1"
    clock.advance(1)
    assert book.signal("c") == "i1"
    assert book.adopt("c") == "i1"
    clock.advance(60)  # an adopted incident does not lapse while its recovery runs
    assert book.current("c") == "i1"
    book.end("c", "i1")
    assert book.current("c") is None
    assert book.signal("c") == "i2"
    assert book.signal("d") == "i3"  # connections have their own


def test_a_pending_incident_lapses_and_at_answers_by_time(clock: FakeClock) -> None:
    """A signal nothing recovers lapses after the window; ``at`` finds the incident of a moment,
    including the window after it ended."""
    book = _book(clock)
    opened = clock()
    book.signal("c")
    clock.advance(11)
    assert book.current("c") is None
    assert book.at("c", opened + 5) == "i1"
    assert book.at("c", opened + 30) is None
    assert book.adopt("c") == "i2"  # a recovery with no pending signal gets its own
    started = clock()
    clock.advance(3)
    book.end("c")
    assert book.at("c", started + 1) == "i2"
    assert book.at("c", clock() + 5) == "i2"  # the trials after the outcome belong to it
    assert book.at("c", opened - 1) is None


async def test_an_incidents_events_all_carry_its_id(tmp_path: Path) -> None:
    """A browser killed under traffic: the fault, the bridge's close, the failed attempts, the
    breakers' decisions, the rungs and the outcome all carry the recovery's incident id, and
    ``incident_chain`` lists them in order."""
    db = tmp_path / "pool.db"
    config = PoolConfig(
        connections=2, workers=("simulated",), db=db, heartbeat_interval=0.5, memory_interval=3600.0
    )
    async with ResourcePool(config, memory_sampler=_host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        driver = pool.members["conn-0"].driver
        assert driver is not None

        async def traffic() -> None:
            while True:
                with contextlib.suppress(PoolwardenError):
                    await pool.run_inference("toy-mlp", {"input": X}, deadline=3.0)
                await asyncio.sleep(0.01)

        load = asyncio.ensure_future(traffic())
        try:
            await pool.inject_fault("conn-0", "browser_kill")
            await asyncio.wait_for(
                driver.wait_for(lambda m: m.last_incident_id is not None and m.incident_id is None), 30
            )
            for _ in range(20):  # the breakers' trials after the recovery
                await pool.run_inference("toy-mlp", {"input": X}, deadline=3.0)
        finally:
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
        incident = driver.machine.last_incident_id
        assert incident is not None
    df = load_events(db)
    chain = incident_chain(df, incident)
    types = set(chain["type"].astype(str))
    assert {
        "FaultInjected",
        "WorkerDisconnected",
        "AttemptFailed",
        "CallFailed",
        "BreakerOpened",
        "RecoveryStarted",
        "RungAttempted",
        "RecoveryCompleted",
        "BreakerHalfOpened",
        "BreakerClosed",
    } <= types
    assert str(chain["type"].iloc[0]) == "FaultInjected"  # from the first signal
    assert chain["since_first_ms"].is_monotonic_increasing
    assert set(chain["connection_id"].astype(str)) == {"conn-0"}
    # Nothing of conn-0's failure is left out of the chain.
    fault_at = chain["occurred_at"].iloc[0]
    done_at = chain[chain["type"] == "RecoveryCompleted"]["occurred_at"].iloc[0]
    during = df[
        (df["connection_id"] == "conn-0")
        & (df["occurred_at"] >= fault_at)
        & (df["occurred_at"] <= done_at)
        & df["type"].isin(
            ["AttemptFailed", "CallFailed", "BreakerOpened", "WorkerDisconnected", "RungAttempted"]
        )
    ]
    assert (during["incident_id"] == incident).all()


async def test_a_panic_route_carries_the_incident_of_its_connection(tmp_path: Path) -> None:
    """A panic route to a connection in an incident carries that incident's id."""
    config = PoolConfig(connections=2, workers=("simulated",), db=tmp_path / "p.db", heartbeat_interval=30.0)
    async with ResourcePool(config, memory_sampler=_host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        incident = pool.incidents.signal("conn-0")
        for connection_id in pool.members:
            breaker = pool.registry.connection(connection_id)
            for _ in range(breaker.policy.consecutive_failures or 5):
                breaker.record_failure(ErrorKind.TRANSPORT, 0.01)
        result = await pool.run_inference("toy-mlp", {"input": X})
        assert result.connection_id == "conn-0"
        await pool.flush()
        panics: list[Any] = [e async for e in pool.store.iter_all() if e.type == "PanicRouted"]
        assert [e.incident_id for e in panics] == [incident]
        opened = [
            e
            async for e in pool.store.iter_all()
            if e.type == "BreakerOpened" and e.stream == "breaker/conn-0"
        ]
        assert [e.incident_id for e in opened] == [incident]
