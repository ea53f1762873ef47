"""Memory pressure degrades the pool, never stops it: loaded models keep serving at CRITICAL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poolwarden.errors import MemoryPressure
from poolwarden.memory import HostReading
from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.pool.member import PoolMember

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)


class Readings:
    """Injected memory readings: the host's percent, and each connection's browser PSS in MB."""

    def __init__(self) -> None:
        self.percent = 40.0
        self.pss_mb: dict[str, float] = {"conn-0": 300.0, "conn-1": 900.0}

    async def host(self) -> HostReading:
        return HostReading(percent=self.percent, available_mb=1000, total_mb=16000)

    async def browser(self, member: PoolMember) -> int | None:
        mb = self.pss_mb.get(member.connection_id)
        return None if mb is None else int(mb * 2**20)


async def test_critical_pressure_under_load_keeps_serving_loaded_models(tmp_path: Path) -> None:
    """At CRITICAL under load (injected readings, the monitor deciding every 20 ms), every
    request for a loaded model succeeds, the worst browser is recycled first, a new load is
    refused with MemoryPressure carrying the reading and the threshold."""
    readings = Readings()
    config = PoolConfig(
        connections=2,
        workers=("simulated",),
        db=tmp_path / "pool.db",
        heartbeat_interval=30.0,
        memory_interval=0.02,
    )
    async with ResourcePool(config, memory_sampler=readings.host, browser_memory=readings.browser) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await pool.load_model("toy-mlp", connection_id="conn-1")
        readings.percent = 95.0

        async def client() -> list[Any]:
            out: list[Any] = []
            for _ in range(150):
                try:
                    out.append(await pool.run_inference("toy-mlp", {"input": X}, deadline=20.0))
                except Exception as error:
                    out.append(error)
            return out

        outcomes = [o for batch in await asyncio.gather(*(client() for _ in range(4))) for o in batch]
        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        with pytest.raises(MemoryPressure) as caught:
            await pool.load_model("matmul", options={"k": 4, "n": 4})
        assert caught.value.level == "critical"
        assert caught.value.percent == 95.0
        assert caught.value.threshold == 90.0
        assert any("toy-mlp" in m.models for m in pool.members.values())
        await pool.flush()
        recycles = [e async for e in pool.store.iter_all() if e.type == "RecycleStarted"]
        assert recycles, "critical pressure recycles a browser"
        assert recycles[0].connection_id == "conn-1"  # the one holding the most, first
        evicted = [e async for e in pool.store.iter_all() if e.type == "ModelEvicted"]
        assert evicted == []  # each connection's only model is its newest: never evicted
