"""``poolwarden bench recovery``: fault to HEALTHY (verified), per fault, on real or simulated workers.

One worker, one lifecycle driver over an in-memory store, and a minimal monitor that turns what
the bridge sees into the lifecycle's faults (a heartbeat that times out, a socket's close code, the
browser's exit, a device loss the page reports). Each fault is injected ``repeat`` times; a run is
timed from the injection until the driver reports the recovery it started as completed, which
happens only after a verified round trip. A fault the worker cannot show (a device loss where the
page has no GPU device) is reported with ``recovered: null``. The original system slept 5 to 50 s
per rung.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from poolwarden.bridge.recorder import EventRecorder
from poolwarden.bridge.server import BridgeServer
from poolwarden.clock import system_clock
from poolwarden.errors import DeadlineExceeded, ModelError, PoolwardenError
from poolwarden.lifecycle import ConnectionLifecycle
from poolwarden.lifecycle_driver import LifecycleDriver
from poolwarden.lifecycle_types import (
    DeviceLost,
    Fault,
    HeartbeatMissed,
    LifecyclePolicy,
    ProcessExited,
    SocketClosed,
)
from poolwarden.storage import open_store
from poolwarden.workers.handle import InjectedFault, WorkerHandle
from poolwarden.workers.recovery_actions import ModelLoad, WorkerRecoveryActions

__all__ = ["run", "run_async"]

WORKER_ID = "bench-recovery"


def _handle(workers: str, server: BridgeServer) -> WorkerHandle:
    if workers == "chromium":
        from poolwarden.workers.chromium import ChromiumWorker

        return ChromiumWorker(server, WORKER_ID, hooks=True)
    if workers == "firefox":
        from poolwarden.workers.firefox import FirefoxWorker

        return FirefoxWorker(server, WORKER_ID, hooks=True)
    from poolwarden.workers.simulated_handle import SimulatedHandle

    return SimulatedHandle(server, WORKER_ID)


async def _detect(
    fault: InjectedFault, handle: WorkerHandle, reports: EventRecorder, mark: int, ping_timeout: float
) -> Fault:
    """Wait for what a monitor would see after ``fault`` and name it as the lifecycle's fault."""
    conn = handle.connection
    if fault is InjectedFault.BROWSER_KILL:
        return ProcessExited(await asyncio.wait_for(handle.wait_exited(), 30))
    if fault in (InjectedFault.RENDERER_CRASH, InjectedFault.SOCKET_DROP):
        closed = await reports.wait_for(lambda e: e.type == "WorkerDisconnected", 30, mark)
        return SocketClosed(int(closed.payload["code"]))
    if fault is InjectedFault.DEVICE_LOST:
        await reports.wait_for(
            lambda e: e.type == "WorkerReported" and e.error_kind == "device_lost", 30, mark
        )
        return DeviceLost()
    try:  # the heartbeat
        await conn.app_ping(timeout=ping_timeout)
    except DeadlineExceeded:
        return HeartbeatMissed()
    raise AssertionError("a hung page answered its heartbeat")


async def _timed(make: Callable[[], Awaitable[tuple[bool, str]]]) -> tuple[bool, str, float]:
    started = time.perf_counter()
    ok, rung = await make()
    return ok, rung, time.perf_counter() - started


async def run_async(workers: str = "simulated", repeat: int = 3, ping_timeout: float = 0.5) -> dict[str, Any]:
    """Inject every fault ``repeat`` times into one worker and time each recovery (see the module)."""
    if workers not in ("chromium", "firefox", "simulated"):
        raise ValueError(f"workers must be chromium, firefox or simulated, not {workers!r}")
    reports = EventRecorder()
    # The restart budget is the pool's guard against crash loops, not what is measured here.
    policy = LifecyclePolicy(
        ping_timeout_s=ping_timeout,
        reconnect_timeout_s=15,
        restart_timeout_s=40,
        recovery_timeout_s=120,
        restart_budget=2 * repeat + 2,
    )
    faults: dict[str, Any] = {}
    async with open_store(":memory:") as store, BridgeServer(on_event=reports) as server:
        handle = _handle(workers, server)
        actions = WorkerRecoveryActions(handle, models=lambda: [ModelLoad("toy-mlp", "toy-mlp")])
        machine = ConnectionLifecycle(WORKER_ID, browser=workers, policy=policy, clock=system_clock)
        driver = LifecycleDriver(machine, actions, store, clock=system_clock)
        driver.start()
        try:
            await handle.start()
            await handle.connection.load_model("toy-mlp")
            driver.hello()
            await driver.settle()
            for fault in InjectedFault:
                if any(f["recovered"] is False for f in faults.values()):
                    # The worker is quarantined or broken: later figures would measure nothing.
                    faults[fault.value] = {"recovered": False, "rung": "not run", "runs": 0}
                    continue
                runs: list[float] = []
                rungs: set[str] = set()
                recovered = True
                for _ in range(repeat):

                    async def one(fault: InjectedFault = fault) -> tuple[bool, str]:
                        mark = len(reports.events)
                        await handle.inject(fault)
                        seen = await _detect(fault, handle, reports, mark, ping_timeout)
                        return await driver.recover(seen)

                    try:
                        ok, rung, seconds = await _timed(one)
                    except ModelError as exc:
                        if exc.kind != "unsupported":
                            raise
                        # This worker cannot show the fault (no GPU device to lose, say).
                        rungs.add("not applicable")
                        break
                    except (PoolwardenError, TimeoutError) as exc:
                        ok, rung, seconds = False, f"error: {exc!r}", float("nan")
                    recovered = recovered and ok
                    rungs.add(rung)
                    runs.append(seconds)
                    if not ok:
                        break
                if not runs:
                    faults[fault.value] = {"recovered": None, "rung": "/".join(sorted(rungs)), "runs": 0}
                    continue
                faults[fault.value] = {
                    "recovered": recovered,
                    "rung": "/".join(sorted(rungs)),
                    "median_s": round(statistics.median(runs), 4),
                    "max_s": round(max(runs), 4),
                    "runs": len(runs),
                }
        finally:
            await driver.stop()
            await handle.stop()
    return {"workers": workers, "ping_timeout_s": ping_timeout, "faults": faults}


def run(workers: str = "simulated", repeat: int = 3, ping_timeout: float = 0.5) -> dict[str, Any]:
    """Run the recovery benchmark in a fresh event loop and return its figures."""
    return asyncio.run(run_async(workers, repeat, ping_timeout))
