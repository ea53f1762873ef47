"""Worker handles over the simulated worker: each injected fault, its rung, and verification."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from poolwarden.bridge.server import BridgeServer
from poolwarden.errors import DeadlineExceeded, ModelError, WorkerDisconnected
from poolwarden.protocol import Tensor, encode_binary, parse_command
from poolwarden.workers.handle import InjectedFault, verify_round_trip
from poolwarden.workers.simulated import Fault
from poolwarden.workers.simulated_handle import SimulatedHandle
from tests.bridge_recorder import SinkRecorder


@pytest.fixture
async def events() -> SinkRecorder:
    return SinkRecorder()


@pytest.fixture
async def handle(events: SinkRecorder) -> AsyncIterator[SimulatedHandle]:
    async with BridgeServer(on_event=events) as server:
        sim = SimulatedHandle(server, "sim-h")
        await sim.start(timeout=5)
        try:
            yield sim
        finally:
            await sim.stop()


async def test_fresh_worker_passes_verification(handle: SimulatedHandle) -> None:
    """A healthy worker's probe inference matches numpy and takes a positive time."""
    assert await verify_round_trip(handle.connection) > 0
    assert await handle.pss_bytes() is None


async def test_killed_worker_is_recovered_by_restart(handle: SimulatedHandle) -> None:
    """After browser_kill the connection closes 1006; restart brings a new instance that verifies."""
    conn = handle.connection
    old = conn.hello.instance if conn.hello else ""
    await handle.inject(InjectedFault.BROWSER_KILL)
    assert (await conn.wait_closed(timeout=5)).code == 1006
    hello = await handle.restart(timeout=5)
    assert hello.instance != old
    await verify_round_trip(conn)


async def test_hung_worker_is_recovered_by_reconnect(handle: SimulatedHandle) -> None:
    """A hung worker fails the app ping; reconnect(hung=True) gives a worker that verifies."""
    conn = handle.connection
    await handle.inject(InjectedFault.PAGE_HANG)
    with pytest.raises(DeadlineExceeded):
        await conn.app_ping(timeout=0.2)
    await handle.reconnect(hung=True, timeout=5)
    await verify_round_trip(conn)


async def test_renderer_crash_fails_requests_until_reconnect(handle: SimulatedHandle) -> None:
    """While the page is down requests fail fast; a reconnect restores service."""
    conn = handle.connection
    await handle.inject(InjectedFault.RENDERER_CRASH)
    await conn.wait_closed(timeout=5)
    with pytest.raises(WorkerDisconnected):
        await verify_round_trip(conn)
    await handle.reconnect(hung=False, timeout=5)
    await verify_round_trip(conn)


async def test_dropped_socket_heals_without_a_rung(handle: SimulatedHandle) -> None:
    """After a socket drop the worker reconnects by itself; no recovery action is needed."""
    conn = handle.connection
    generation = conn.generation
    await handle.inject(InjectedFault.SOCKET_DROP)
    await conn.wait_for_hello(after=generation, timeout=5)
    await verify_round_trip(conn)


async def test_device_loss_is_reported_and_the_worker_serves_on(
    handle: SimulatedHandle, events: SinkRecorder
) -> None:
    """A destroyed device is reported unprompted (device_lost), and the next inference succeeds."""
    await handle.inject(InjectedFault.DEVICE_LOST)
    reported = await events.wait_for(lambda e: e.type == "WorkerReported")
    assert reported.error_kind == "device_lost"
    await verify_round_trip(handle.connection)


async def test_loss_during_an_inference_fails_it_with_device_lost(handle: SimulatedHandle) -> None:
    """A device lost while an inference runs fails that inference with kind device_lost, not the next."""
    await handle.worker.inject(Fault.DEVICE_LOST)
    with pytest.raises(ModelError) as info:
        await verify_round_trip(handle.connection)
    assert info.value.kind == "device_lost"
    await verify_round_trip(handle.connection)


async def test_verification_catches_wrong_numbers() -> None:
    """A worker that answers with zeros fails verification with kind wrong_result."""
    async with BridgeServer() as server:

        async def liar() -> None:
            async with connect(server.ws_url("liar"), origin=server.origin) as ws:  # type: ignore[arg-type]
                hello = {
                    "type": "hello",
                    "protocol": 1,
                    "token": server.secret_for("liar"),
                    "worker_id": "liar",
                }
                await ws.send(json.dumps({**hello, "instance": "x", "backend": "js", "capabilities": {}}))
                async for frame in ws:
                    cmd = parse_command(frame, server.limits)
                    if cmd.type == "load_model":
                        await ws.send(
                            json.dumps({"type": "loaded", "id": cmd.id, "model": "_probe", "backend": "js"})
                        )
                    elif cmd.type == "infer":
                        zeros = Tensor.from_values("output", [[0.0] * 4])
                        header = {"type": "result", "id": cmd.id, "model": "_probe", "backend": "js"}
                        await ws.send(encode_binary(header, [zeros]))

        task = asyncio.create_task(liar())
        try:
            conn = server.worker("liar")
            await conn.wait_for_hello(after=0, timeout=5)
            with pytest.raises(ModelError) as info:
                await verify_round_trip(conn)
            assert info.value.kind == "wrong_result"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
