"""Telemetry counts what has happened by the time it is asked, and says what it means."""

from __future__ import annotations

import asyncio
from pathlib import Path

from poolwarden.compat import ResourcePoolBridge, ResourcePoolErrorRecovery
from poolwarden.telemetry.live import export_telemetry

INPUT = {"input": [[0.25] * 16]}


async def test_sync_and_async_telemetry_count_requests_served_moments_ago(tmp_path: Path) -> None:
    """Right after 5 requests (and one refused), with no flush, both paths count 6, once each."""
    bridge = ResourcePoolBridge(max_connections=2, workers="simulated", db=str(tmp_path / "t.db"))
    await bridge.initialize()
    try:
        await bridge.load_model("toy-mlp")
        for _ in range(5):
            assert (await bridge.run_inference("toy-mlp", INPUT))["success"]
        assert (await bridge.run_inference("toy-mlp", {"input": [[1.0]]}))["error_type"] == "InvalidInput"
        sync = ResourcePoolErrorRecovery.export_telemetry(bridge)
        assert sync["requests"] == {"total": 6, "served": 5, "failed": 1}
        asynchronous = await export_telemetry(bridge.pool)
        assert asynchronous["requests"] == {"total": 6, "served": 5, "failed": 1}
        # Now the log holds them all: still counted once.
        assert ResourcePoolErrorRecovery.export_telemetry(bridge)["requests"]["total"] == 6
        for _ in range(3):
            await bridge.run_inference("toy-mlp", INPUT)
            await asyncio.sleep(0.3)  # appends land at their own pace in between
            assert ResourcePoolErrorRecovery.export_telemetry(bridge)["requests"]["served"] == 6 + _
    finally:
        await bridge.close()
