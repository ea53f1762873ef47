"""Simulated workers in a process of their own, and the echo mode's precomputed answers."""

from __future__ import annotations

import numpy as np

from poolwarden.bridge.server import BridgeServer
from poolwarden.workers.models import reference_forward, resolve_model
from poolwarden.workers.simulated import SimulatedWorker
from poolwarden.workers.simulated_process import SimulatedProcess, SimulatedProcessHandle

X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)


async def test_an_out_of_process_worker_serves_over_the_bridge_and_restarts() -> None:
    """The child connects with the pool-issued secret, answers right in echo mode, and restarts."""
    async with BridgeServer() as server, SimulatedProcess(echo=True) as process:
        handle = SimulatedProcessHandle(server, "oop-1", process)
        hello = await handle.start()
        assert hello.worker_id == "oop-1"
        connection = handle.connection
        await connection.load_model("toy-mlp", "toy-mlp")
        expected = reference_forward(resolve_model("toy-mlp", {}), X)
        for _ in range(3):  # the first computed, the next two the precomputed bytes with their own ids
            result = await connection.infer("toy-mlp", {"input": X}, timeout=5.0)
            np.testing.assert_allclose(result.tensors[0].to_numpy(), expected, rtol=1e-5)
        first = hello.instance
        again = await handle.restart()
        assert again.instance != first
        await handle.stop()


async def test_echo_answers_with_each_request_id() -> None:
    """In process too: echo keeps one reply per model and shape, and writes each request's id in."""
    async with BridgeServer() as server:
        worker = SimulatedWorker.for_server(server, "echo-1", echo=True)
        await worker.start()
        connection = server.worker("echo-1")
        await connection.wait_for_hello(after=0, timeout=5.0)
        await connection.load_model("toy-mlp", "toy-mlp")
        answers = [await connection.infer("toy-mlp", {"input": X[:1]}, timeout=5.0) for _ in range(3)]
        assert len({a.id for a in answers}) == 3
        await worker.stop()
