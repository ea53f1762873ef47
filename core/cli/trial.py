"""``poolwarden test-recovery``: start a pool, inject one fault, report the ladder rung by rung."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

from poolwarden.errors import PoolwardenError
from poolwarden.lifecycle_events import RecoveryCompleted
from poolwarden.workers.choice import resolve_workers

__all__ = ["run_recovery_trial"]


async def run_recovery_trial(
    *,
    workers: str = "auto",
    connection_id: str | None = None,
    fault: str = "page_hang",
    db: str = "poolwarden.db",
    wait_s: float = 120.0,
) -> dict[str, Any]:
    """Start a pool, inject ``fault`` on one connection, and report the recovery it ran.

    Returns the incident: its rungs as attempted (with outcomes and times), the rung that
    recovered (or that it was quarantined) and the seconds from fault to serving again.
    """
    from poolwarden.pool import PoolConfig, ResourcePool

    kind, why = resolve_workers(workers)
    config = PoolConfig(
        connections=2,
        workers=(kind,),
        db=db,
        hooks=kind != "simulated",
        heartbeat_interval=0.5,
    )
    async with ResourcePool(config) as pool:
        await pool.load_model("toy-mlp")
        target = connection_id or pool.model_connections["toy-mlp"]
        member = pool.members.get(target)
        if member is None or member.driver is None:
            raise PoolwardenError(f"no connection {target!r} in the pool (it has {', '.join(pool.members)})")
        driver = member.driver
        injected_at = time.monotonic()
        await pool.inject_fault(target, fault)
        # Something must notice the fault: traffic, the close watcher, or the heartbeat.
        probe = asyncio.create_task(_probe(pool))
        try:
            await asyncio.wait_for(driver.wait_for(lambda m: m.incident_id is not None), wait_s)
            incident = driver.machine.incident_id
            await asyncio.wait_for(driver.wait_for(lambda m: m.incident_id is None), wait_s)
        finally:
            probe.cancel()
        elapsed = time.monotonic() - injected_at
        await pool.flush()
        events = [
            e for e in await pool.store.read_stream(f"connection/{target}") if e.incident_id == incident
        ]
    steps = [
        {
            "type": e.type,
            "rung": e.rung,
            "outcome": e.outcome,
            "latency_ms": e.latency_ms,
            "at": datetime.fromtimestamp(e.occurred_at, tz=UTC).isoformat(timespec="milliseconds"),
        }
        for e in events
    ]
    last = events[-1] if events else None
    recovered = last is not None and last.type == RecoveryCompleted.TYPE
    return {
        "workers": kind,
        "why": why,
        "connection_id": target,
        "fault": fault,
        "incident_id": incident,
        "recovered": recovered,
        "rung": last.rung if recovered and last is not None else None,
        "outcome": last.outcome if last is not None else None,
        "fault_to_healthy_s": round(elapsed, 3),
        "steps": steps,
    }


async def _probe(pool: Any) -> None:
    """Light traffic while a fault is being recovered, so that request failures are signals too."""
    import numpy as np

    x = np.zeros((1, 16), dtype=np.float32)
    while True:
        with contextlib.suppress(PoolwardenError):
            await pool.run_inference("toy-mlp", {"input": x}, deadline=2.0)
        await asyncio.sleep(0.2)
