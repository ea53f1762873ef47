"""``poolwarden bench recovery``: each fault injected into a live worker, timed to a verified HEALTHY.

One worker (real Chromium or Firefox with its test hooks, or the simulated worker) is looked after
by a :class:`~poolwarden.aio.recovery.Recovery` exactly as a pool would: watchers on its socket and
process, a heartbeat, the lifecycle ladder, every event in a SQLite file. Each fault of
:class:`~poolwarden.workers.handle.InjectedFault` is caused ``repeat`` times; a run is timed from
the injection until the ladder reports the connection HEALTHY, which it does only after a verified
round trip (a toy-mlp inference checked against numpy). Each injection comes at a random point of
the heartbeat's cycle (a delay drawn uniformly from one interval, outside the timing, from
``seed``), as a fault in production does: injected at a fixed point, every hang would wait the
same share of the interval before the next heartbeat and the median would be that share's, not
the average's. A dropped socket opens no recovery (the
page reconnects by itself, models intact): it is timed to the page's new hello plus the same
verified round trip. After each run, outside the timing, the placed model's result is checked
against numpy too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from poolwarden.aio.recovery import Recovery
from poolwarden.aio.recovery_actions import PlacedModel
from poolwarden.bridge.server import BridgeServer
from poolwarden.errors import ConfigurationError, ModelError
from poolwarden.events import NewEvent
from poolwarden.lifecycle_types import ConnectionState, LifecyclePolicy
from poolwarden.pool.spares import SPARE_KINDS, SpareKeeper
from poolwarden.pool_events import PoolEvent
from poolwarden.storage import open_store
from poolwarden.workers.handle import InjectedFault, WorkerHandle, verify_round_trip
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model

__all__ = ["run"]

WORKER_KINDS = ("chromium", "firefox", "simulated")
"""What ``--workers`` accepts."""

HEARTBEAT_INTERVAL_S = 0.1
"""How often the rig's heartbeat pings its worker (as a pool's default)."""

PLACED = PlacedModel("bench-mlp", "toy-mlp")
"""The model the benchmark places on its worker (loaded again after every reload or restart)."""

_INPUT = np.linspace(-1.0, 1.0, 48, dtype=np.float32).reshape(3, 16)
NO_RUNG = "none"
"""The rung reported for a fault the page heals by itself (a dropped socket)."""


@dataclass
class RecoveryRig:
    """A started worker, its bridge server and the recovery looking after it (and its warm spares)."""

    server: BridgeServer
    handle: WorkerHandle
    recovery: Recovery
    spares: SpareKeeper | None = None


def bench_policy(ping_timeout_s: float) -> LifecyclePolicy:
    """The ladder's deadlines for a benchmark: a short ping, room for a slow launch, no budget limit.

    Every run of ``browser_kill`` spends a restart, so the budget is lifted: this measures speed,
    not the budget (the tests check that).
    """
    return LifecyclePolicy(
        ping_timeout_s=ping_timeout_s,
        reconnect_timeout_s=15.0,
        restart_timeout_s=40.0,
        verify_timeout_s=10.0,
        recovery_timeout_s=120.0,
        restart_budget=1_000_000,
    )


def make_handle(workers: str, server: BridgeServer, worker_id: str) -> WorkerHandle:
    """A handle of the ``workers`` kind, with the test hooks the faults need."""
    if workers == "chromium":
        from poolwarden.workers.chromium import ChromiumWorker

        return ChromiumWorker(server, worker_id, hooks=True)
    if workers == "firefox":
        from poolwarden.workers.firefox import FirefoxWorker

        return FirefoxWorker(server, worker_id, hooks=True)
    if workers == "simulated":
        from poolwarden.workers.simulated_handle import SimulatedHandle

        return SimulatedHandle(server, worker_id)
    raise ConfigurationError(f"--workers must be one of {', '.join(WORKER_KINDS)}, got {workers!r}")


@contextlib.asynccontextmanager
async def recovery_rig(
    workers: str,
    db_path: Path,
    *,
    policy: LifecyclePolicy,
    worker_id: str = "bench-1",
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
    reconnect_grace_s: float = 1.0,
    warm_spares: int = 0,
) -> AsyncIterator[RecoveryRig]:
    """A worker of kind ``workers`` started with :data:`PLACED` loaded, under a running Recovery.

    The bridge's events reach the recovery (a page's unprompted ``device_lost`` counts). With
    ``warm_spares`` (browsers only), a :class:`SpareKeeper` keeps that many spares, which the
    restart rung promotes as in a pool. On exit the recovery stops first, then the spares and the
    worker (its browser killed whole), then the server.
    """
    router: list[Recovery] = []

    def route(event: NewEvent) -> None:
        for recovery in router:
            recovery.on_bridge_event(event)

    async with BridgeServer(on_event=route) as server, open_store(db_path) as store:
        handle = make_handle(workers, server, worker_id)
        spares: SpareKeeper | None = None
        if warm_spares > 0 and workers in SPARE_KINDS:
            from poolwarden.workers.browser_worker import BrowserWorker

            assert isinstance(handle, BrowserWorker)
            spares = _spare_keeper(workers, server, warm_spares)
            spares.attach(handle, worker_id)
        try:
            if spares is not None:
                spares.replenish()
            await handle.start()
            await handle.connection.load_model(PLACED.model, PLACED.kind, PLACED.options)
            recovery = Recovery(
                handle,
                store,
                policy=policy,
                models=[PLACED],
                heartbeat_interval_s=heartbeat_interval_s,
                reconnect_grace_s=reconnect_grace_s,
            )
            router.append(recovery)
            async with recovery:
                await recovery.driver.wait_for(lambda m: m.state is ConnectionState.HEALTHY)
                yield RecoveryRig(server, handle, recovery, spares)
        finally:
            if spares is not None:
                await spares.close()
            await handle.stop()


def _spare_keeper(workers: str, server: BridgeServer, count: int) -> SpareKeeper:
    from poolwarden.workers.browser_worker import BrowserWorker

    def make(kind: str, spare_id: str) -> BrowserWorker:
        worker = make_handle(kind, server, spare_id)
        assert isinstance(worker, BrowserWorker)
        return worker

    def record(event: PoolEvent) -> None:
        """The benchmark keeps the spares' events in ``SpareKeeper.events`` only."""

    return SpareKeeper(
        server=server,
        kinds=(workers,),
        count=count,
        make=make,
        spare_id=lambda n: f"bench-spare-{n}",
        emit=record,
        allowed=lambda: True,
    )


async def inject_and_recover(rig: RecoveryRig, fault: InjectedFault, timeout: float) -> tuple[str, float]:  # noqa: ASYNC109
    """Cause ``fault`` and wait until the connection is verified HEALTHY; return the rung and seconds.

    Raises ``AssertionError`` if the connection was quarantined, ``TimeoutError`` after ``timeout``.
    """
    recovery, connection = rig.recovery, rig.handle.connection
    before = recovery.machine.last_incident_id
    generation = connection.generation
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        await rig.handle.inject(fault)
        if fault is InjectedFault.SOCKET_DROP:
            await connection.wait_for_hello(after=generation, timeout=timeout)
            await verify_round_trip(connection, timeout=timeout)
            elapsed = time.perf_counter() - started
            if recovery.machine.last_incident_id != before:
                raise AssertionError(f"a dropped socket opened recovery {recovery.machine.last_incident_id}")
            return NO_RUNG, elapsed
        if fault is InjectedFault.DEVICE_LOST:
            await _use_lost_device(rig)
        success, rung = await recovery.wait_outcome(before, timeout)
    elapsed = time.perf_counter() - started
    if not success:
        raise AssertionError(f"{fault.value}: the connection was {rung}d instead of recovered")
    return rung, elapsed


async def _use_lost_device(rig: RecoveryRig) -> None:
    # The page reports the loss by itself; the simulated worker only on its next inference, whose
    # device_lost error is handed over as the pool would hand over a request's error.
    try:
        await rig.handle.connection.infer(PLACED.model, {"input": _INPUT}, timeout=5.0)
    except ModelError as exc:
        rig.recovery.notice_error(exc)


async def check_placed_model(rig: RecoveryRig) -> str:
    """Run the placed model and compare with numpy; return the backend that computed it."""
    result = await rig.handle.connection.infer(PLACED.model, {"input": _INPUT}, timeout=10.0)
    expected = reference_forward(resolve_model(PLACED.kind or PLACED.model), _INPUT)
    got = result.tensors[0].to_numpy()
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
        raise ModelError(
            f"{PLACED.model} computed {got.tolist()}, expected {expected.tolist()}", "wrong_result"
        )
    return result.backend


def injection_phases(seed: int) -> Iterator[float]:
    """Delays before each injection, uniform over one heartbeat interval, reproducible from ``seed``."""
    draw = random.Random(seed)
    while True:
        yield draw.uniform(0.0, HEARTBEAT_INTERVAL_S)


def _supported(rig: RecoveryRig, fault: InjectedFault) -> bool:
    # Without a GPU device there is none to lose: Firefox here runs the JS path.
    return fault is not InjectedFault.DEVICE_LOST or rig.handle.connection.backend in ("webgpu", "simulated")


async def measure(
    workers: str,
    repeat: int,
    ping_timeout_s: float,
    db_path: Path,
    *,
    warm_spares: int = 0,
    only: tuple[str, ...] = (),
    seed: int = 0,
) -> dict[str, Any]:
    """The benchmark's result object (see the module docstring)."""
    if repeat < 1:
        raise ConfigurationError(f"--repeat must be at least 1, got {repeat}")
    if warm_spares < 0:
        raise ConfigurationError(f"--warm-spares must be at least 0, got {warm_spares}")
    chosen = [InjectedFault(name) for name in only] if only else list(InjectedFault)
    policy = bench_policy(ping_timeout_s)
    phases = injection_phases(seed)
    faults: dict[str, Any] = {}
    spare_pss: list[float] = []
    async with recovery_rig(workers, db_path, policy=policy, warm_spares=warm_spares) as rig:
        await check_placed_model(rig)
        for fault in chosen:
            if not _supported(rig, fault):
                print(f"{fault.value}: skipped (backend {rig.handle.connection.backend})", file=sys.stderr)
                faults[fault.value] = {"recovered": False, "rung": None, "median_s": None, "runs": 0}
                continue
            rungs: Counter[str] = Counter()
            times: list[float] = []
            for _ in range(repeat):
                if rig.spares is not None:
                    # Outside the timing: a run measures a promotion, not a spare still launching.
                    spare = await rig.spares.wait_ready(workers, policy.restart_timeout_s)
                    with contextlib.suppress(Exception):
                        pss = await spare.pss_bytes()
                        if pss is not None:
                            spare_pss.append(pss / 2**20)
                await asyncio.sleep(next(phases))  # outside the timing: where in the cycle it lands
                rung, seconds = await inject_and_recover(rig, fault, policy.recovery_timeout_s)
                await check_placed_model(rig)
                rungs[rung] += 1
                times.append(seconds)
            faults[fault.value] = {
                "recovered": True,
                "rung": rungs.most_common(1)[0][0],
                "median_s": round(statistics.median(times), 4),
                "runs": len(times),
            }
            others = f" (rungs {dict(rungs)})" if len(rungs) > 1 else ""
            print(
                f"{fault.value}: rung {faults[fault.value]['rung']}{others}, "
                f"median {statistics.median(times):.3f} s, max {max(times):.3f} s, runs {len(times)}",
                file=sys.stderr,
                flush=True,
            )
        promoted = sum(type(e).__name__ == "SparePromoted" for e in rig.spares.events) if rig.spares else 0
    result: dict[str, Any] = {
        "workers": workers,
        "ping_timeout_s": ping_timeout_s,
        "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
        "seed": seed,
        "faults": faults,
    }
    if warm_spares:
        result["warm_spares"] = warm_spares
        result["spares_promoted"] = promoted
        result["spare_pss_mb"] = round(statistics.median(spare_pss), 1) if spare_pss else None
    return result


def run(
    workers: str = "chromium",
    repeat: int = 3,
    ping_timeout_s: float = 0.5,
    *,
    warm_spares: int = 0,
    faults: tuple[str, ...] = (),
    seed: int = 0,
) -> dict[str, Any]:
    """Run the benchmark in a fresh event loop, the events in a temporary SQLite file."""
    with tempfile.TemporaryDirectory(prefix="poolwarden-bench-recovery-") as tmp:
        return asyncio.run(
            measure(
                workers,
                repeat,
                ping_timeout_s,
                Path(tmp) / "events.db",
                warm_spares=warm_spares,
                only=faults,
                seed=seed,
            )
        )
