"""Measure fault -> verified round trip with the recovery primitives alone (no ladder, no pool).

For each injected fault, the primitive that answers it is run directly: restart for a killed
browser, reload for a killed renderer, app-ping timeout then crash+reload for a hung page, nothing
for a dropped socket (the page reconnects by itself), nothing for a lost device (the page recreates
it). The figure is from the injection to a verified tiny inference. It also reports the time
from launch to hello and the median round trip of a 64x64 matmul. The recovery benchmark of the
pool (``poolwarden bench recovery``) measures the same through the lifecycle machine's ladder.

Usage: .venv/bin/python scripts/measure_recovery_primitives.py [--workers chromium|simulated]
       [--repeat N] [--ping-timeout S]; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import numpy as np

from poolwarden.bridge.server import BridgeServer
from poolwarden.errors import DeadlineExceeded, ModelError
from poolwarden.workers.chromium import ChromiumWorker
from poolwarden.workers.handle import InjectedFault, WorkerHandle, verify_round_trip
from poolwarden.workers.simulated_handle import SimulatedHandle


async def recover_once(handle: WorkerHandle, fault: InjectedFault, ping_timeout: float) -> tuple[str, float]:
    conn = handle.connection
    generation = conn.generation
    started = time.perf_counter()
    await handle.inject(fault)
    if fault is InjectedFault.BROWSER_KILL:
        await conn.wait_closed(generation, timeout=10)
        await handle.restart()
        rung = "restart"
    elif fault is InjectedFault.RENDERER_CRASH:
        await conn.wait_closed(generation, timeout=10)
        await handle.reconnect(hung=False)
        rung = "reconnect"
    elif fault is InjectedFault.PAGE_HANG:
        try:
            await conn.app_ping(timeout=ping_timeout)
            raise AssertionError("a hung page answered the app ping")
        except DeadlineExceeded:
            pass
        await handle.reconnect(hung=True)
        rung = "reconnect"
    elif fault is InjectedFault.SOCKET_DROP:
        await conn.wait_for_hello(after=generation, timeout=10)
        rung = "none"
    else:
        rung = "none"
        try:
            await verify_round_trip(conn)
        except ModelError as exc:  # the inference in flight when the device went
            if exc.kind != "device_lost":
                raise
    await verify_round_trip(conn)
    return rung, time.perf_counter() - started


async def matmul_latency_ms(handle: WorkerHandle, runs: int = 50) -> float:
    """Median round trip of a 64x64 matmul, after a few warm-up calls."""
    conn = handle.connection
    await conn.load_model("mm64", "matmul", {"k": 64, "n": 64})
    a = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    times = []
    for i in range(runs + 5):
        started = time.perf_counter()
        await conn.infer("mm64", {"input": a})
        if i >= 5:
            times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", choices=["chromium", "simulated"], default="chromium")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ping-timeout", type=float, default=0.5)
    args = parser.parse_args()
    report: dict[str, object] = {"workers": args.workers, "ping_timeout_s": args.ping_timeout}
    faults: dict[str, object] = {}
    async with BridgeServer() as server:
        handle: WorkerHandle
        if args.workers == "chromium":
            handle = ChromiumWorker(server, "measure", hooks=True)
        else:
            handle = SimulatedHandle(server, "measure")
        started = time.perf_counter()
        await handle.start()
        report["start_to_hello_s"] = round(time.perf_counter() - started, 3)
        try:
            await verify_round_trip(handle.connection)
            report["matmul64_round_trip_ms"] = await matmul_latency_ms(handle)
            for fault in InjectedFault:
                times = []
                rung = ""
                for _ in range(args.repeat):
                    rung, seconds = await recover_once(handle, fault, args.ping_timeout)
                    times.append(seconds)
                faults[fault.value] = {
                    "recovered": True,
                    "rung": rung,
                    "median_s": round(statistics.median(times), 4),
                    "max_s": round(max(times), 4),
                    "runs": len(times),
                }
                print(fault.value, faults[fault.value], flush=True)
        finally:
            await handle.stop()
    report["faults"] = faults
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
