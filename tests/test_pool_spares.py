"""Warm spare browsers: promoted by the restart rung, replaced, retired under memory pressure.

The browser tests run real Chromium (a simulated worker has no browser to keep warm: its
``browser_kill`` is a dropped socket, healed at the reconnect rung, so it never reaches the
restart rung). Every wait is for an event (the keeper's, a lifecycle state), never a fixed sleep.
Leaks are checked as in ``tests/test_browser_ownership.py``: no process whose command line names
the pool's own profiles folder (a private ``tempfile.tempdir``) is left after ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from poolwarden.bridge.server import BridgeServer
from poolwarden.browser.launcher import find_chromium, find_firefox
from poolwarden.codec import REGISTRY, decode, encode
from poolwarden.errors import ConfigurationError, ProtocolError, WorkerDisconnected
from poolwarden.events import NewEvent, RecordedEvent
from poolwarden.lifecycle_types import ConnectionState
from poolwarden.memory import HostReading
from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.pool_events import PoolEvent, SpareLaunched, SparePromoted, SpareRetired
from poolwarden.workers.handle import verify_round_trip
from poolwarden.workers.simulated import SimulatedWorker
from tests.bridge_helpers import installed

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
WAIT = 60.0

chromium_only = [
    pytest.mark.browser,
    pytest.mark.skipif(not installed(find_chromium), reason="Chromium is not installed"),
]

firefox_only = [
    pytest.mark.browser,
    pytest.mark.skipif(not installed(find_firefox), reason="Firefox is not installed"),
]


class Host:
    """The host's memory reading, set by the test."""

    def __init__(self) -> None:
        self.percent = 40.0

    async def __call__(self) -> HostReading:
        return HostReading(percent=self.percent, available_mb=1000, total_mb=16000)


@pytest.fixture
def own_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private temporary folder for the pool's browser profiles (short: Chromium's sockets)."""
    root = Path(tempfile.mkdtemp(prefix="pws-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    try:
        yield root
    finally:
        with contextlib.suppress(OSError):
            for path in sorted(root.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            root.rmdir()


def _browsers_under(root: Path) -> list[str]:
    left = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if any(str(root) in arg for arg in proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {proc.name()}")
    return left


def _no_browser_left(root: Path, within: float = 10.0) -> list[str]:
    """Poll the process table (bounded) until no browser under ``root`` is left; what is left."""
    deadline = time.monotonic() + within
    while (left := _browsers_under(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


async def _wait_for(pool: ResourcePool, done: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not done():
            await pool.wait_changed(1.0)
    assert done(), what


def _chromium(tmp_path: Path, *, connections: int, browser: str = "chromium") -> PoolConfig:
    """Chromium (or ``browser``) connections with test hooks and one warm spare; memory is read
    when the test says."""
    return PoolConfig(
        connections=connections,
        workers=(browser,),
        db=tmp_path / "pool.db",
        hooks=True,
        heartbeat_interval=30.0,
        memory_interval=3600.0,
        warm_spares=1,
    )


def _count(pool: ResourcePool, kind: type[PoolEvent]) -> int:
    return sum(isinstance(event, kind) for event in pool.spares.events)


def test_warm_spares_is_validated_and_off_by_default() -> None:
    assert PoolConfig().warm_spares == 0
    with pytest.raises(ConfigurationError):
        PoolConfig(warm_spares=-1)


def test_the_spare_events_are_registered_and_round_trip() -> None:
    for event in (
        SpareLaunched(spare_id="spare-0", browser="chromium", latency_ms=160.0),
        SparePromoted(connection_id="conn-0", spare_id="spare-0", browser="chromium", latency_ms=12.5),
        SpareRetired(spare_id="spare-1", browser="chromium", reason="memory pressure warning"),
    ):
        assert REGISTRY.get(type(event).__name__) is type(event)
        new = encode(event, 1.0)
        assert new.type == type(event).__name__
        assert decode(_recorded(new)) == event


def _recorded(new: NewEvent) -> RecordedEvent:
    return RecordedEvent.of(new, position=1, stream="pool/main", version=1, recorded_at=1.0)


async def test_simulated_workers_get_no_spare(tmp_path: Path) -> None:
    config = PoolConfig(connections=1, workers=("simulated",), db=tmp_path / "pool.db", warm_spares=1)
    async with ResourcePool(config, memory_sampler=Host()) as pool:
        assert pool.spares.kinds == ()
        await pool.check_memory()
        assert pool.spares.events == []
        assert pool.governor.spares_mb == {}


@pytest.mark.parametrize("_", [pytest.param(None, marks=chromium_only)])
async def test_a_killed_browser_is_replaced_by_the_warm_spare_under_traffic(
    tmp_path: Path, own_tmp: Path, _: None
) -> None:
    """SIGKILL a connection's browser under traffic: its restart rung promotes the spare
    (SparePromoted), every request succeeds, a new spare is launched (SpareLaunched), the spare's
    memory is sampled, and after close no browser process is left."""
    async with ResourcePool(_chromium(tmp_path, connections=2), memory_sampler=Host()) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await pool.load_model("toy-mlp", connection_id="conn-1")
        await _wait_for(pool, lambda: _count(pool, SpareLaunched) == 1, "a spare was launched")
        spare = pool.spares.spares[0]
        spare_pid = spare.process.pid if spare.process is not None else None
        await pool.check_memory()
        assert pool.governor.spares_mb[spare.worker_id] > 10  # its PSS is counted
        assert spare.worker_id not in pool.members
        assert len(pool.healthy_connections) == 2

        member = pool.members["conn-0"]
        stop = asyncio.Event()

        async def traffic() -> list[Any]:
            out: list[Any] = []
            while not stop.is_set():
                try:
                    out.append(await pool.run_inference("toy-mlp", {"input": X}, deadline=20.0))
                except Exception as error:
                    out.append(error)
            return out

        clients = [asyncio.ensure_future(traffic()) for _ in range(4)]
        try:
            await _wait_for(pool, lambda: member.state is ConnectionState.HEALTHY, "conn-0 serves")
            await pool.inject_fault("conn-0", "browser_kill")
            await _wait_for(pool, lambda: _count(pool, SparePromoted) == 1, "the spare was promoted")
            assert member.recovery is not None
            await asyncio.wait_for(
                member.recovery.driver.wait_for(lambda m: m.state is ConnectionState.HEALTHY), WAIT
            )
            await _wait_for(pool, lambda: _count(pool, SpareLaunched) == 2, "a new spare was launched")
        finally:
            stop.set()
            results = [r for batch in await asyncio.gather(*clients) for r in batch]
        failures = [r for r in results if isinstance(r, Exception)]
        assert not failures, failures[:3]
        assert len(results) > 10
        # conn-0 runs in the spare's browser now, and serves.
        process = getattr(member.handle, "process", None)
        assert process is not None
        assert process.pid == spare_pid
        served = {(await pool.run_inference("toy-mlp", {"input": X})).connection_id for _ in range(30)}
        assert "conn-0" in served
        (promoted,) = [e for e in pool.spares.events if isinstance(e, SparePromoted)]
        assert (promoted.connection_id, promoted.spare_id) == ("conn-0", spare.worker_id)
        # The promoted tab is conn-0's for good: a reload (the reconnect rung after a renderer
        # crash) comes back as conn-0, and a second kill is seen and promotes the next spare.
        recovery = member.recovery
        assert recovery is not None
        before = recovery.machine.last_incident_id
        await pool.inject_fault("conn-0", "renderer_crash")
        assert await recovery.wait_outcome(before, WAIT) == (True, "reconnect")
        before = recovery.machine.last_incident_id
        await pool.inject_fault("conn-0", "browser_kill")
        assert await recovery.wait_outcome(before, WAIT) == (True, "restart")
        assert _count(pool, SparePromoted) == 2
        served = {(await pool.run_inference("toy-mlp", {"input": X})).connection_id for _ in range(30)}
        assert "conn-0" in served
        await pool.flush()
        stored = [e.type async for e in pool.store.iter_all() if e.type.startswith("Spare")]
        assert stored[:4] == ["SpareLaunched", "SparePromoted", "SpareLaunched", "SparePromoted"]
        rungs = [
            e.rung
            async for e in pool.store.iter_all()
            if e.type == "RungSucceeded" and e.stream == "connection/conn-0"
        ]
        assert "restart" in rungs
    assert await asyncio.to_thread(_no_browser_left, own_tmp) == []


@pytest.mark.parametrize(
    "percent", [pytest.param(85.0, marks=chromium_only), pytest.param(95.0, marks=chromium_only)]
)
async def test_memory_pressure_retires_the_spare_and_launches_none(
    tmp_path: Path, own_tmp: Path, percent: float
) -> None:
    """At WARNING (85 %) or CRITICAL (95 %) the spare is retired and none is launched, not even
    after a restart rung (which launches a browser instead); back to normal, one is launched."""
    host = Host()
    async with ResourcePool(_chromium(tmp_path, connections=1), memory_sampler=host) as pool:
        await pool.load_model("toy-mlp")
        await _wait_for(pool, lambda: _count(pool, SpareLaunched) == 1, "a spare was launched")
        host.percent = percent
        await pool.check_memory()
        (retired,) = [e for e in pool.spares.events if isinstance(e, SpareRetired)]
        assert retired.reason.startswith("memory pressure")
        assert pool.spares.spares == []
        await pool.check_memory()  # still under pressure: nothing launched
        member = pool.members["conn-0"]
        assert member.recovery is not None
        await pool.inject_fault("conn-0", "browser_kill")
        await asyncio.wait_for(
            member.recovery.driver.wait_for(lambda m: m.state is ConnectionState.RESTARTING), WAIT
        )
        await asyncio.wait_for(
            member.recovery.driver.wait_for(lambda m: m.state is ConnectionState.HEALTHY), WAIT
        )
        await pool.check_memory()
        assert _count(pool, SparePromoted) == 0
        assert _count(pool, SpareLaunched) == 1
        assert pool.spares.spares == []
        assert (await pool.run_inference("toy-mlp", {"input": X}, deadline=20.0)).connection_id == "conn-0"
        host.percent = 40.0
        await pool.check_memory()
        await _wait_for(pool, lambda: _count(pool, SpareLaunched) == 2, "a spare after the pressure")
    assert await asyncio.to_thread(_no_browser_left, own_tmp) == []


async def test_the_bridge_hands_a_spares_socket_to_a_worker_id() -> None:
    """``BridgeServer.adopt``: a spare page's live socket serves ``conn-0`` at a new generation,
    the spare's id is withdrawn (its hello is refused), and the page, told its new id and secret,
    comes back as ``conn-0`` after its socket is cut. The simulated worker stands in for the
    spare's page here (in a pool it never gets a spare: it has no browser)."""
    async with BridgeServer() as server:
        page = SimulatedWorker.for_server(server, "spare-0")
        await page.start()
        try:
            await server.worker("spare-0").wait_for_hello(after=0)
            target = server.worker("conn-0")
            before = target.generation
            hello = await server.adopt("conn-0", "spare-0")
            assert hello.worker_id == "conn-0"
            assert target.connected
            assert target.generation == before + 1
            assert "spare-0" not in server.workers
            await verify_round_trip(target)
            with pytest.raises(WorkerDisconnected):  # the spare's id is gone: nothing to adopt
                await server.adopt("conn-0", "spare-0")
            other = SimulatedWorker.for_server(server, "spare-1")
            await other.start()
            try:
                await server.worker("spare-1").wait_for_hello(after=0)
                with pytest.raises(ProtocolError):  # a live worker id is never adopted over
                    await server.adopt("conn-0", "spare-1")
                assert server.worker("spare-1").connected  # the spare keeps its socket
            finally:
                await other.stop()
            generation = target.generation
            await target.drop()
            await target.wait_for_hello(after=generation)  # it re-attached as conn-0, by itself
            assert page.worker_id == "conn-0"
            await verify_round_trip(target)
        finally:
            await page.stop()


@pytest.mark.parametrize("_", [pytest.param(None, marks=chromium_only)])
async def test_a_spare_that_died_idle_is_retired_and_replaced(tmp_path: Path, own_tmp: Path, _: None) -> None:
    """A spare's browser killed while it waits is never promoted: the next memory round retires
    it (SpareRetired, lost) and launches another."""
    async with ResourcePool(_chromium(tmp_path, connections=1), memory_sampler=Host()) as pool:
        dead = await pool.spares.wait_ready("chromium", WAIT)
        assert dead.process is not None
        os.killpg(dead.process.pid, signal.SIGKILL)
        await asyncio.wait_for(dead.process.process.wait(), WAIT)
        assert pool.spares.take("chromium") is None
        await pool.check_memory()
        (retired,) = [e for e in pool.spares.events if isinstance(e, SpareRetired)]
        assert (retired.spare_id, retired.reason.split(":")[0]) == (dead.worker_id, "lost")
        await _wait_for(pool, lambda: _count(pool, SpareLaunched) == 2, "another spare was launched")
    assert await asyncio.to_thread(_no_browser_left, own_tmp) == []


@pytest.mark.parametrize("_", [pytest.param(None, marks=firefox_only)])
async def test_a_killed_firefox_is_replaced_by_its_warm_spare(tmp_path: Path, own_tmp: Path, _: None) -> None:
    """The same promotion with Firefox (its page rebound over BiDi, not DevTools): the killed
    connection's restart rung promotes the Firefox spare, the connection serves from the spare's
    process, a new spare is launched, and after close no browser process is left."""
    config = _chromium(tmp_path, connections=1, browser="firefox")
    async with ResourcePool(config, memory_sampler=Host()) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await _wait_for(pool, lambda: _count(pool, SpareLaunched) == 1, "a spare was launched")
        spare = pool.spares.spares[0]
        spare_pid = spare.process.pid if spare.process is not None else None
        member = pool.members["conn-0"]
        assert member.recovery is not None
        before = member.recovery.machine.last_incident_id
        await pool.inject_fault("conn-0", "browser_kill")
        assert await member.recovery.wait_outcome(before, WAIT) == (True, "restart")
        assert _count(pool, SparePromoted) == 1
        process = getattr(member.handle, "process", None)
        assert process is not None
        assert process.pid == spare_pid
        result = await pool.run_inference("toy-mlp", {"input": X}, deadline=20.0)
        assert result.connection_id == "conn-0"
        await _wait_for(pool, lambda: _count(pool, SpareLaunched) == 2, "a new spare was launched")
        (promoted,) = [e for e in pool.spares.events if isinstance(e, SparePromoted)]
        assert (promoted.connection_id, promoted.spare_id, promoted.browser) == (
            "conn-0",
            spare.worker_id,
            "firefox",
        )
    assert await asyncio.to_thread(_no_browser_left, own_tmp) == []
