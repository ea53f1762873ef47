"""``poolwarden test-recovery``: start a pool, inject one fault, report the ladder rung by rung."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

from poolwarden.errors import PoolwardenError
from poolwarden.lifecycle_events import RecoveryCompleted
from poolwarden.pool_events import PageReattached
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
        seen = pool.reattachments.get(target)
        injected_at = time.monotonic()
        await pool.inject_fault(target, fault)
        # Something must notice the fault: traffic, the close watcher, or the heartbeat. A cut
        # socket may heal by itself (the page reconnects, and is verified): then no incident
        # opens, and the page's own return is the outcome to report.
        probe = asyncio.create_task(_probe(pool))
        incident: str | None = None
        by_page: tuple[bool, float] | None = None
        timed_out = False
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    if driver.machine.incident_id is not None:
                        incident = driver.machine.incident_id
                        break
                    if pool.reattachments.get(target) is not seen:
                        by_page = pool.reattachments[target]
                        break
                    await pool.wait_changed(0.5)
                if incident is not None:
                    await driver.wait_for(lambda m: m.incident_id is None)
        except TimeoutError:
            timed_out = True  # reported, as a typed outcome, not a traceback
        finally:
            probe.cancel()
        elapsed = time.monotonic() - injected_at
        await pool.flush()
        if by_page is not None:
            events = [
                e
                for e in await pool.store.read_stream(pool.streams.pool)
                if e.type == PageReattached.TYPE and e.connection_id == target
            ][-1:]
        else:
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
    if by_page is not None:
        verified, took = by_page
        return {
            "workers": kind,
            "why": why,
            "connection_id": target,
            "fault": fault,
            "incident_id": None,
            "recovered": verified,
            "rung": "page" if verified else None,
            "outcome": "recovered by the page itself" if verified else "page re-attached, not verified",
            "fault_to_healthy_s": round(took, 3),
            "steps": steps,
        }
    recovered = not timed_out and last is not None and last.type == RecoveryCompleted.TYPE
    return {
        "workers": kind,
        "why": why,
        "connection_id": target,
        "fault": fault,
        "incident_id": incident,
        "recovered": recovered,
        "rung": last.rung if recovered and last is not None else None,
        "outcome": f"nothing recovered within {wait_s:g} s"
        if timed_out
        else (last.outcome if last else None),
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
