"""``poolwarden bench pool``: inference through the pool against the bare bridge, same worker.

In one process: a pool of simulated workers serves ``requests`` toy-mlp requests from
``concurrency`` clients, through its queue, breakers, placement and event log; then the same
requests go straight over the same workers' WebSocket connections (request, binary tensor
frame, answer) with no pool in between. The two alternate for five rounds of ``requests / 5``
each. ``overhead_ratio`` is the pool's best round over the bare loop's best; both pay for the
same simulated worker in the same process, so it isolates the pool.

Then the same again with the simulated worker in a process of its own
(:mod:`poolwarden.workers.simulated_process`), in echo mode (each inference answered with
precomputed bytes), connected to the pool's bridge over loopback with the pool-issued worker ids
and secrets as a page is; the baseline is a bare ``websockets`` server in this process that sends
the same request frames to the same worker process (its own echo workers) and takes the same
replies. ``pool_cpu_us_per_request`` and ``echo_cpu_us_per_request`` are this process's CPU time
(``time.process_time``) per request in each one's best round, the worker process's excluded;
``pool_vs_echo`` is their ratio. ``pool_top_costs`` are the ten functions with the most own time
(cProfile's tottime) in one more pool round, each with its share of the profiled time.
"""

from __future__ import annotations

import asyncio
import cProfile
import itertools
import json
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from websockets.asyncio.server import ServerConnection, serve

from poolwarden.bridge.server import BridgeServer
from poolwarden.pool import PoolConfig, ResourcePool, WorkerFactory
from poolwarden.protocol import BINARY_MAGIC_V2, PROTOCOL_VERSION, Limits, Tensor
from poolwarden.workers.handle import WorkerHandle
from poolwarden.workers.simulated import FrameTemplate
from poolwarden.workers.simulated_process import SimulatedProcess, SimulatedProcessHandle

__all__ = ["run"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _config(connections: int, db: Path) -> PoolConfig:
    return PoolConfig(
        connections=connections,
        workers=("simulated",),
        db=db,
        heartbeat_interval=60.0,
        memory_interval=3600.0,
    )


async def _measure(requests: int, concurrency: int, connections: int, folder: Path) -> dict[str, Any]:
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    config = _config(connections, folder / "bench-pool.db")
    async with ResourcePool(config) as pool:
        for member in pool.members.values():
            await pool.load_model("toy-mlp", connection_id=member.connection_id)
        connections_ = [member.connection for member in pool.members.values()]

        async def through_pool(latencies: list[float], count: int) -> None:
            for _ in range(count):
                began = time.perf_counter()
                await pool.run_inference("toy-mlp", {"input": x})
                latencies.append(time.perf_counter() - began)

        async def bare(latencies: list[float], count: int, index: int) -> None:
            connection = connections_[index % len(connections_)]
            for _ in range(count):
                began = time.perf_counter()
                await connection.infer("toy-mlp", {"input": x}, timeout=10.0)
                latencies.append(time.perf_counter() - began)

        rounds = 5
        per_client = max(1, requests // (concurrency * rounds))
        results: dict[str, Any] = {}
        # Warm both paths, then time them in alternation, five rounds each; each path's figure
        # is its best round (as timeit does), so that work of other processes during one round
        # shows in neither, and a machine slowing down or speeding up affects both alike.
        await asyncio.gather(*(through_pool([], 20) for _ in range(concurrency)))
        await asyncio.gather(*(bare([], 20, i) for i in range(concurrency)))
        timings: dict[str, list[float]] = {"pool": [], "bare": []}
        latencies: dict[str, list[float]] = {"pool": [], "bare": []}
        for name in ("pool", "bare") * rounds:
            started = time.perf_counter()
            if name == "pool":
                await asyncio.gather(*(through_pool(latencies[name], per_client) for _ in range(concurrency)))
            else:
                await asyncio.gather(*(bare(latencies[name], per_client, i) for i in range(concurrency)))
            timings[name].append(time.perf_counter() - started)
        done = per_client * concurrency
        pool_s = min(timings["pool"])
        bare_s = min(timings["bare"])
        results.update(
            requests=done * rounds,
            rounds=rounds,
            concurrency=concurrency,
            connections=connections,
            pool_requests_per_s=round(done / pool_s),
            bare_requests_per_s=round(done / bare_s),
            pool_p50_ms=round(_percentile(latencies["pool"], 0.5) * 1000, 3),
            pool_p99_ms=round(_percentile(latencies["pool"], 0.99) * 1000, 3),
            bare_p50_ms=round(_percentile(latencies["bare"], 0.5) * 1000, 3),
            bare_p99_ms=round(_percentile(latencies["bare"], 0.99) * 1000, 3),
            overhead_ratio=round(pool_s / bare_s, 3),
            served=pool.counters["served"],
        )
    return results


def _in_process(process: SimulatedProcess) -> WorkerFactory:
    """A pool's worker factory whose simulated workers run in ``process``."""

    def make(server: BridgeServer, kind: str, worker_id: str) -> WorkerHandle:
        return SimulatedProcessHandle(server, worker_id, process)

    return make


class _EchoLink:
    """The bare baseline's side of one worker socket: send a request frame, await its reply."""

    def __init__(self, ws: ServerConnection, request: FrameTemplate, ids: itertools.count[int]) -> None:
        self.ws = ws
        self.request = request
        self.ids = ids
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    async def infer(self) -> bytes:
        request_id = next(self.ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        await self.ws.send(self.request(request_id))
        return await future

    def answer(self, frame: bytes | str) -> None:
        if isinstance(frame, str):  # loaded (the only text answer the baseline asks for)
            request_id = json.loads(frame)["id"]
        elif frame[:4] == BINARY_MAGIC_V2:  # a result: its id is the uint64 at offset 8
            request_id = int.from_bytes(frame[8:16], "little")
        else:  # a version 1 result: the id in its JSON header, after 8 bytes of fixed header
            at = frame.index(b'"id":', 8) + 5
            request_id = int(frame[at : frame.index(b",", at)])
        future = self.waiting.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(frame if isinstance(frame, bytes) else frame.encode())


def _top_costs(profile: cProfile.Profile, count: int = 10) -> list[list[Any]]:
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in stats.values()) or 1.0
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:count]
    top = []
    for (filename, line, function), entry in ranked:
        label = function if filename == "~" else f"{'/'.join(Path(filename).parts[-2:])}:{line}({function})"
        top.append([label, round(entry[2] / total, 3)])
    return top


async def _measure_out_of_process(
    requests: int, concurrency: int, connections: int, folder: Path
) -> dict[str, Any]:
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    request = FrameTemplate(
        {"type": "infer", "model": "toy-mlp"}, [Tensor.from_values("input", x)], PROTOCOL_VERSION
    )
    ids = itertools.count(2)
    links: list[_EchoLink] = []
    linked = asyncio.Event()

    async def echo_handler(ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        await ws.send(
            json.dumps(
                {
                    "type": "welcome",
                    "protocol": PROTOCOL_VERSION,
                    "worker_id": hello["worker_id"],
                    "generation": 1,
                }
            )
        )
        link = _EchoLink(ws, request, ids)
        load = json.dumps(
            {"type": "load_model", "id": 1, "model": "toy-mlp", "kind": "toy-mlp", "options": {}}
        )
        loaded = link.waiting[1] = asyncio.get_running_loop().create_future()
        await ws.send(load)
        reader = asyncio.ensure_future(_read(ws, link))
        async with asyncio.timeout(10.0):
            await loaded
        links.append(link)
        if len(links) == connections:
            linked.set()
        await reader

    async def _read(ws: ServerConnection, link: _EchoLink) -> None:
        async for frame in ws:
            link.answer(frame)

    config = _config(connections, folder / "bench-pool-oop.db")
    async with (
        serve(
            echo_handler, "127.0.0.1", 0, compression=None, max_size=Limits().max_frame_bytes
        ) as echo_server,
        SimulatedProcess(echo=True) as process,
    ):
        port = echo_server.sockets[0].getsockname()[1]
        for index in range(connections):
            await process.add(f"ws://127.0.0.1:{port}/ws?worker=echo-{index}", "-", f"echo-{index}", None)
        async with asyncio.timeout(10.0):
            await linked.wait()
        worker = psutil.Process(process.pid)
        async with ResourcePool(config, worker_factory=_in_process(process)) as pool:
            for member in pool.members.values():
                await pool.load_model("toy-mlp", connection_id=member.connection_id)

            async def through_pool(count: int) -> None:
                for _ in range(count):
                    await pool.run_inference("toy-mlp", {"input": x})

            async def echo(count: int, index: int) -> None:
                link = links[index % len(links)]
                for _ in range(count):
                    await link.infer()

            paths: dict[str, Callable[[int, int], Awaitable[None]]] = {
                "pool": lambda count, _index: through_pool(count),
                "echo": echo,
            }
            rounds = 5
            per_client = max(1, requests // (concurrency * rounds))
            done = per_client * concurrency
            for name in paths:  # warm both
                await asyncio.gather(*(paths[name](20, i) for i in range(concurrency)))
            cpu: dict[str, list[float]] = {"pool": [], "echo": []}
            worker_cpu: dict[str, list[float]] = {"pool": [], "echo": []}
            wall: dict[str, list[float]] = {"pool": [], "echo": []}
            for name in ("pool", "echo") * rounds:
                worker_began = sum(worker.cpu_times()[:2])
                began, cpu_began = time.perf_counter(), time.process_time()
                await asyncio.gather(*(paths[name](per_client, i) for i in range(concurrency)))
                cpu[name].append(time.process_time() - cpu_began)
                wall[name].append(time.perf_counter() - began)
                worker_cpu[name].append(sum(worker.cpu_times()[:2]) - worker_began)
            profile = cProfile.Profile(time.process_time)  # CPU, not wall: a send that wakes the worker
            # may be preempted by it on a loaded machine, and the wait is no cost of the pool
            profile.enable()
            await asyncio.gather(*(through_pool(per_client) for _ in range(concurrency)))
            profile.disable()
        pool_cpu, echo_cpu = min(cpu["pool"]) / done, min(cpu["echo"]) / done
        return {
            "pool_cpu_us_per_request": round(pool_cpu * 1e6, 1),
            "echo_cpu_us_per_request": round(echo_cpu * 1e6, 1),
            "pool_vs_echo": round(pool_cpu / echo_cpu, 3),
            "worker_cpu_us_per_request_pool": round(min(worker_cpu["pool"]) / done * 1e6, 1),
            "worker_cpu_us_per_request_echo": round(min(worker_cpu["echo"]) / done * 1e6, 1),
            "oop_pool_requests_per_s": round(done / min(wall["pool"])),
            "oop_echo_requests_per_s": round(done / min(wall["echo"])),
            "pool_top_costs": _top_costs(profile),
        }


def run(requests: int = 20_000, concurrency: int = 16, connections: int = 2) -> dict[str, Any]:
    """Run the pool benchmark and return its figures."""
    with tempfile.TemporaryDirectory(prefix="poolwarden-bench-pool-") as folder:
        results = asyncio.run(_measure(requests, concurrency, connections, Path(folder)))
        results.update(asyncio.run(_measure_out_of_process(requests, concurrency, connections, Path(folder))))
        return results
