"""An impostor holding a live worker's own secret cannot take its place; the pool's rungs can.

The impostor here is given what no other local user can get (tests/test_browser_adversary.py
shows that): the live worker id's secret, from ``server.secret_for``. Its hellos are refused with
4409 while the worker's socket is live, however many it sends, and the worker keeps serving the
numpy reference's numbers. When the pool itself declares the worker dead (the recovery ladder's
reconnect rung, also for a hung page whose socket is still open), the real page re-attaches.
Every wait is for a hello, a close, an event or a lifecycle outcome, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from poolwarden.aio.recovery import Recovery
from poolwarden.aio.recovery_actions import PlacedModel
from poolwarden.bridge.server import CLOSE_DECLARED_DEAD, CLOSE_WORKER_LIVE, BridgeServer
from poolwarden.browser.launcher import find_chromium
from poolwarden.errors import DeadlineExceeded
from poolwarden.lifecycle_types import HeartbeatMissed, LifecyclePolicy, SocketClosed
from poolwarden.storage import EventStore, open_store
from poolwarden.workers.chromium import ChromiumWorker
from poolwarden.workers.handle import InjectedFault, verify_round_trip
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model
from poolwarden.workers.simulated_handle import SimulatedHandle
from tests.bridge_helpers import installed
from tests.bridge_recorder import SinkRecorder

WORKER = "conn-1"
IMPOSTORS = 25
POLICY = LifecyclePolicy(
    ping_timeout_s=0.3,
    reconnect_timeout_s=10,
    restart_timeout_s=10,
    verify_timeout_s=10,
    recovery_timeout_s=60,
)
X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)


async def impostor(server: BridgeServer, worker_id: str, secret: str) -> str:
    """Say a well-formed hello as ``worker_id`` with ``secret``; how the bridge answered.

    Welcomed, it would answer every request with zeros, as the hijacker of issue 11 did.
    """
    hello = {
        "type": "hello",
        "protocol": 1,
        "token": secret,
        "worker_id": worker_id,
        "instance": "impostor",
        "browser": {"name": "chromium", "version": "1", "user_agent": "impostor"},
        "backend": "webgpu",
        "capabilities": {},
    }
    async with connect(server.ws_url(worker_id), origin=server.origin) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps(hello))
        try:
            async for frame in ws:
                message = json.loads(frame)
                if message["type"] == "welcome":
                    return "welcome"
        except ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        return f"closed {rcvd.code} {rcvd.reason}" if rcvd is not None else "closed abruptly"


async def infer_correctly(server: BridgeServer, model: str = "mlp") -> None:
    """One inference on the worker, checked against the numpy reference."""
    result = await server.worker(WORKER).infer(model, {"input": X}, timeout=10)
    expected = reference_forward(resolve_model("toy-mlp"), X)
    np.testing.assert_allclose(result.tensors[0].to_numpy(), expected, RTOL, ATOL)


@dataclass
class Rig:
    """A simulated worker serving ``mlp`` under a Recovery, with the bridge's events recorded."""

    server: BridgeServer
    handle: SimulatedHandle
    store: EventStore
    recovery: Recovery
    events: SinkRecorder


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    events = SinkRecorder()
    async with BridgeServer(on_event=events) as server, open_store(tmp_path / "takeover.db") as store:
        handle = SimulatedHandle(server, WORKER)
        await handle.start()
        await handle.connection.load_model("mlp", "toy-mlp")
        recovery = Recovery(handle, store, policy=POLICY, models=[PlacedModel("mlp", "toy-mlp")])
        await recovery.start()
        try:
            yield Rig(server, handle, store, recovery, events)
        finally:
            await recovery.stop()
            await handle.stop()


async def test_an_impostor_with_the_live_workers_secret_is_refused_while_it_serves(rig: Rig) -> None:
    """25 impostors, each with the right secret, are refused with 4409 while the live worker keeps
    answering correctly; refusals are counted, and only a burst of them is written."""
    conn = rig.handle.connection
    instance = conn.hello.instance if conn.hello else None
    secret = rig.server.secret_for(WORKER)

    async def keep_serving() -> int:
        served = 0
        for _ in range(IMPOSTORS):
            await infer_correctly(rig.server)
            served += 1
        return served

    outcomes, served = await asyncio.gather(
        asyncio.gather(*(impostor(rig.server, WORKER, secret) for _ in range(IMPOSTORS))), keep_serving()
    )
    assert outcomes == [f"closed {CLOSE_WORKER_LIVE} worker id is live"] * IMPOSTORS
    assert served == IMPOSTORS
    assert conn.generation == 1  # never displaced
    assert conn.hello is not None
    assert conn.hello.instance == instance
    assert rig.server.refusals.totals["worker_live"] == IMPOSTORS
    refused = rig.events.of_type("WorkerRefused")
    assert len(refused) == rig.server.refusals.burst
    assert {e.error_kind for e in refused} == {"worker_live"}
    assert rig.events.of_type("WorkerDisconnected") == []
    assert len(rig.events.of_type("WorkerConnected")) == 1


async def test_after_the_reconnect_rung_declares_it_dead_the_real_worker_reattaches(rig: Rig) -> None:
    """The reconnect rung frees the worker id (4410) before its reload; the reloaded worker, not an
    impostor, says hello, serves correct numbers, and is itself protected from takeover."""
    conn = rig.handle.connection
    old_instance = conn.hello.instance if conn.hello else None
    secret = rig.server.secret_for(WORKER)
    assert await impostor(rig.server, WORKER, secret) == f"closed {CLOSE_WORKER_LIVE} worker id is live"

    assert await rig.recovery.recover_connection(SocketClosed(1001)) == (True, "reconnect")

    left = [e for e in rig.events.of_type("WorkerDisconnected") if e.payload["generation"] == 1]
    assert [e.payload["code"] for e in left] == [CLOSE_DECLARED_DEAD]
    assert conn.generation == 2
    assert conn.hello is not None
    assert conn.hello.instance not in (old_instance, "impostor")
    await infer_correctly(rig.server)
    assert await impostor(rig.server, WORKER, secret) == f"closed {CLOSE_WORKER_LIVE} worker id is live"
    await infer_correctly(rig.server)


async def test_a_hung_worker_keeps_its_id_until_the_ladder_declares_it_dead(rig: Rig) -> None:
    """A hung worker's socket stays open, so impostors are still refused; the ladder's crash and
    reload declares it dead first, and the reloaded worker gets in."""
    conn = rig.handle.connection
    await rig.handle.inject(InjectedFault.PAGE_HANG)
    with pytest.raises(DeadlineExceeded):
        await conn.app_ping(timeout=0.2)
    secret = rig.server.secret_for(WORKER)
    assert await impostor(rig.server, WORKER, secret) == f"closed {CLOSE_WORKER_LIVE} worker id is live"
    assert conn.generation == 1

    assert await rig.recovery.recover_connection(HeartbeatMissed()) == (True, "reconnect")

    closes = [(e.payload["generation"], e.payload["code"]) for e in rig.events.of_type("WorkerDisconnected")]
    assert closes[0] == (1, CLOSE_DECLARED_DEAD)
    assert conn.generation == 2
    await infer_correctly(rig.server)


chromium_only = pytest.mark.skipif(not installed(find_chromium), reason="Chromium is not installed")


@pytest.mark.browser
@chromium_only
async def test_real_chromium_is_not_displaced_and_reattaches_after_each_rung() -> None:
    """On real Chromium: an impostor with the secret is refused while the page serves; the reload
    rung and the crash-and-reload rung of a hung page each declare the page dead first, and the
    page re-attaches and verifies."""
    events = SinkRecorder()
    async with BridgeServer(on_event=events) as server:
        worker = ChromiumWorker(server, WORKER, hooks=True)
        try:
            await worker.start()
            conn = worker.connection
            secret = server.secret_for(WORKER)
            refused = f"closed {CLOSE_WORKER_LIVE} worker id is live"
            outcomes = await asyncio.gather(*(impostor(server, WORKER, secret) for _ in range(5)))
            assert outcomes == [refused] * 5
            await verify_round_trip(conn)
            assert conn.generation == 1

            await worker.reconnect(hung=False, timeout=20)
            assert conn.generation == 2
            await verify_round_trip(conn)
            assert await impostor(server, WORKER, secret) == refused

            await worker.inject(InjectedFault.PAGE_HANG)
            with pytest.raises(DeadlineExceeded):
                await conn.app_ping(timeout=0.5)
            assert await impostor(server, WORKER, secret) == refused  # a hung page's socket is live
            await worker.reconnect(hung=True, timeout=20)
            assert conn.generation == 3
            await verify_round_trip(conn)

            closes = [
                (e.payload["generation"], e.payload["code"]) for e in events.of_type("WorkerDisconnected")
            ]
            assert closes == [(1, CLOSE_DECLARED_DEAD), (2, CLOSE_DECLARED_DEAD)]
            assert {e.error_kind for e in events.of_type("WorkerRefused")} == {"worker_live"}
            assert server.refusals.totals["worker_live"] == 7
        finally:
            await worker.stop()
