"""What the pool tests on simulated workers share: an input, a steady host reading, a config."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwarden.memory import HostReading
from poolwarden.pool import PoolConfig

if TYPE_CHECKING:
    from poolwarden.pool import ResourcePool

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
"""One input row for the built-in toy-mlp model."""


async def steady_host() -> HostReading:
    """A host reading with no memory pressure."""
    return HostReading(percent=40.0, available_mb=1000, total_mb=16000)


def pool_config(tmp_path: Path, **overrides: Any) -> PoolConfig:
    """Two simulated connections logging to ``tmp_path/pool.db``; heartbeats and memory readings
    far apart (the tests drive faults and readings themselves) unless ``overrides`` say otherwise."""
    options: dict[str, Any] = {
        "connections": 2,
        "workers": ("simulated",),
        "db": tmp_path / "pool.db",
        "heartbeat_interval": 30.0,
        "memory_interval": 3600.0,
    }
    options.update(overrides)
    return PoolConfig(**options)


async def inject_and_recover(pool: ResourcePool, connection_id: str, fault: str) -> None:
    """Inject ``fault`` on ``connection_id`` and wait (30 s at most) until the incident it began
    has ended, everything it decided persisted."""
    driver = pool.members[connection_id].driver
    assert driver is not None
    before = driver.machine.last_incident_id
    await pool.inject_fault(connection_id, fault)
    await asyncio.wait_for(
        driver.wait_for(lambda m: m.last_incident_id != before and m.incident_id is None), 30
    )
