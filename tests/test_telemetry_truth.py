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


async def test_recovery_reports_incidents_and_rung_attempts_apart(tmp_path: Path) -> None:
    """One incident whose ping timed out and whose reconnect worked: 1 of 1 recovered, 1 of 2 attempts."""
    from poolwarden.telemetry.from_log import telemetry_from_log
    from tests.analysis_scenario import _incident, _lifecycle, write_events

    events = _incident(
        "conn-1",
        "chromium",
        "inc-1",
        10,
        "transport",
        [("ping", "timed_out", 5), ("reconnect", "succeeded", 2)],
    )
    events.append(
        _lifecycle(
            "conn-1",
            "chromium",
            "inc-1",
            17,
            "RecoveryCompleted",
            rung="reconnect",
            outcome="recovered",
            to_state="healthy",
            error_kind="transport",
            latency_ms=7000.0,
        )
    )
    await write_events(tmp_path / "one.db", events)
    recovery = (await telemetry_from_log(tmp_path / "one.db"))["recovery"]
    assert (recovery["incidents"], recovery["recovered"], recovery["quarantined"]) == (1, 1, 0)
    assert recovery["success_rate"] == 1.0
    assert (recovery["attempts"], recovery["successes"], recovery["attempt_success_rate"]) == (2, 1, 0.5)
    assert recovery["by_rung"]["ping"]["success_rate"] == 0.0
    assert recovery["by_rung"]["reconnect"]["success_rate"] == 1.0


async def test_a_log_after_a_clean_stop_says_every_connection_closed(tmp_path: Path) -> None:
    """After close(), telemetry from the log counts each connection closed, none healthy."""
    from poolwarden.pool import PoolConfig, ResourcePool
    from poolwarden.telemetry.from_log import telemetry_from_log

    db = tmp_path / "stopped.db"
    async with ResourcePool(PoolConfig(connections=3, workers=("simulated",), db=str(db))) as pool:
        await pool.load_model("toy-mlp")
        await pool.run_inference("toy-mlp", INPUT)
    connections = (await telemetry_from_log(db))["connections"]
    assert connections["total"] == 3
    assert (connections["healthy"], connections["degraded"], connections["unhealthy"]) == (0, 0, 0)
    assert connections["closed"] == 3


async def test_telemetry_has_the_seed_keys_it_can_compute_honestly(tmp_path: Path) -> None:
    """datetime, stats, performance_history and per-connection memory, errors and recoveries are there,
    live and from the log; recommendations are not (docs/pool.md says why)."""
    from poolwarden.pool import PoolConfig, ResourcePool
    from poolwarden.telemetry.from_log import telemetry_from_log

    db = tmp_path / "keys.db"
    config = PoolConfig(connections=2, workers=("simulated",), db=str(db), memory_interval=0.05)
    async with ResourcePool(config) as pool:
        await pool.load_model("toy-mlp")
        for _ in range(4):
            await pool.run_inference("toy-mlp", INPUT)
        await asyncio.sleep(0.3)  # a few memory samples
        live = await export_telemetry(pool, include_connections=True)
        assert live["stats"]["served"] == 4
        assert live["datetime"] == live["timestamp"]
        assert sum(b["served"] for b in live["performance_history"]) == 4
        assert "recommendations" not in live
        details = {d["connection_id"]: d for d in live["connection_details"]}
        assert set(details) == set(pool.members)
        for detail in details.values():
            assert detail["error_count"] == 0
            assert detail["recovery"] == {"incidents": 0, "recovered": 0, "rung_attempts": 0}
            assert detail["memory_mb"] is None  # a simulated worker has no memory of its own
    logged = await telemetry_from_log(db, detailed=True)
    assert logged["stats"]["main"]["served"] == 4
    assert all("memory_mb" in d and "error_count" in d for d in logged["connection_details"])


def test_is_simulation_means_no_browser_computed_the_output() -> None:
    """A simulated worker's result is a simulation (though correct); a browser's is not."""
    from poolwarden.pool.results import InferenceResult

    simulated = InferenceResult("toy-mlp", [], "conn-0", "simulated", "simulated", 1.0, 1)
    browser = InferenceResult("toy-mlp", [], "conn-0", "chromium", "webgpu", 1.0, 1)
    assert simulated.to_dict()["is_simulation"] is True
    assert browser.to_dict()["is_simulation"] is False


async def test_connection_details_carry_the_latest_memory_sample(tmp_path: Path) -> None:
    """From the scenario log: each connection's latest PSS sample, its failed calls and its incidents."""
    from poolwarden.telemetry.from_log import telemetry_from_log
    from tests.analysis_scenario import write_scenario

    await write_scenario(tmp_path / "scenario.db")
    details = {
        d["connection_id"]: d
        for d in (await telemetry_from_log(tmp_path / "scenario.db", detailed=True))["connection_details"]
    }
    assert details["conn-1"]["memory_mb"] == 450.0
    assert details["conn-2"]["memory_mb"] == 300.0
    assert details["conn-1"]["recovery"]["incidents"] == 2
    assert details["conn-1"]["recovery"]["recovered"] == 1
    assert details["conn-2"]["recovery"] == {"incidents": 2, "recovered": 2, "rung_attempts": 2}


async def test_the_recorder_tells_which_events_a_log_does_not_hold_yet(tmp_path: Path) -> None:
    """Before an append all recorded events are unseen; after it, those past the log's version only."""
    from poolwarden.aio.recorder import EventRecorder
    from poolwarden.clock import FakeClock
    from poolwarden.storage import open_store

    async with open_store(tmp_path / "r.db") as store:
        recorder = EventRecorder(store, "pool/main", FakeClock(1.0))
        for i in range(3):
            recorder.record("Thing", payload={"i": i})
        assert [e.payload["i"] for e in recorder.not_in_log(0)] == [0, 1, 2]
        await recorder.flush()
        await store.flush()
        assert recorder.not_in_log(3) == []
        recorder.record("Thing", payload={"i": 3})
        assert [e.payload["i"] for e in recorder.not_in_log(3)] == [3]
        await recorder.flush()
        await store.flush()
        assert recorder.not_in_log(4) == []


async def test_a_live_pool_counts_its_own_on_a_log_another_pool_shares(tmp_path: Path) -> None:
    """Two pools on one log: each one's live telemetry, by both paths, counts its own requests and
    incidents, not the other's."""
    from poolwarden.pool import PoolConfig, ResourcePool
    from tests.pool_support import inject_and_recover

    def config(name: str) -> PoolConfig:
        return PoolConfig(
            name=name,
            connections=1,
            workers=("simulated",),
            db=tmp_path / "fleet.db",
            heartbeat_interval=0.2,
            memory_interval=3600.0,
        )

    async with ResourcePool(config("main")) as main_pool, ResourcePool(config("east")) as east:
        for pool, served in ((main_pool, 3), (east, 5)):
            await pool.load_model("toy-mlp")
            for _ in range(served):
                await pool.run_inference("toy-mlp", INPUT)
        await inject_and_recover(east, "east.conn-0", "browser_kill")
        for pool, served, incidents in ((main_pool, 3, 0), (east, 5, 1)):
            asynchronous = await export_telemetry(pool)
            assert asynchronous["requests"] == {"total": served, "served": served, "failed": 0}
            assert asynchronous["recovery"]["incidents"] == incidents
            sync = ResourcePoolErrorRecovery.export_telemetry(pool)
            assert sync["requests"] == asynchronous["requests"]
            assert sync["recovery"]["incidents"] == incidents
