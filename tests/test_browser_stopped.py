"""A stopped (SIGSTOP) browser is restarted as fast as a killed one: the group is killed first."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from poolwarden.browser.launcher import BrowserProcess, find_chromium
from poolwarden.pool import PoolConfig, ResourcePool
from tests.bridge_helpers import installed

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not installed(find_chromium), reason="Chromium is not installed"),
]


async def _fault_to_healthy(tmp_path: Path, sig: signal.Signals) -> tuple[float, list[str], float, str]:
    config = PoolConfig(
        connections=1, workers=("chromium",), db=tmp_path / f"{sig.name}.db", heartbeat_interval=0.5
    )
    async with ResourcePool(config) as pool:
        member = pool.members["conn-0"]
        process = member.handle.process  # type: ignore[attr-defined]
        assert isinstance(process, BrowserProcess)
        driver = member.driver
        assert driver is not None
        began = time.monotonic()
        os.killpg(process.pid, sig)
        await asyncio.wait_for(
            driver.wait_for(lambda m: m.last_incident_id is not None and m.incident_id is None), 60
        )
        took = time.monotonic() - began
        await pool.flush()
        events = [
            e
            for e in await pool.store.read_stream("connection/conn-0")
            if e.incident_id == driver.machine.last_incident_id
        ]
    rungs = [str(e.rung) for e in events if e.type == "RungAttempted"]
    (succeeded,) = [e for e in events if e.type == "RungSucceeded"]
    assert succeeded.latency_ms is not None
    trigger = str(events[0].payload["trigger"])
    return took, rungs, succeeded.latency_ms / 1000, trigger


async def test_a_stopped_browser_is_restarted_as_fast_as_a_killed_one(tmp_path: Path) -> None:
    """SIGSTOP: the missed heartbeat finds the group stopped and goes straight to the restart rung,
    whose time is within a second of a SIGKILLed browser's (it was ~10 s more)."""
    killed, killed_rungs, killed_rung_s, _ = await _fault_to_healthy(tmp_path, signal.SIGKILL)
    stopped, stopped_rungs, stopped_rung_s, trigger = await _fault_to_healthy(tmp_path, signal.SIGSTOP)
    assert killed_rungs == stopped_rungs == ["restart"]
    assert trigger == "browser_stopped"
    assert stopped_rung_s < killed_rung_s + 1.5
    # Fault to healthy: a heartbeat must miss first (interval 0.5 s, ping timeout 1 s).
    assert stopped < killed + 3.0
