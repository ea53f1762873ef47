"""The seed's API: its Integration Example runs with only its imports changed."""

from __future__ import annotations

# --- the seed's "Integration Example", verbatim but for its imports ----------------------------
import logging
from pathlib import Path

import numpy as np

from poolwarden.compat import ResourcePoolBridge, ResourcePoolErrorRecovery
from poolwarden.workers.models import reference_forward, resolve_model

logger = logging.getLogger(__name__)


class EnhancedResourcePoolBridge(ResourcePoolBridge):
    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.enable_enhanced_error_recovery = True

    async def run_inference(self, model_id, inputs, retry_attempts=1):  # type: ignore[no-untyped-def]
        # Check circuit breaker first
        if self.enable_enhanced_error_recovery and model_id in self.model_connections:
            connection = self.model_connections[model_id]
            circuit_allowed, circuit_reason = ResourcePoolErrorRecovery.check_circuit_breaker(
                connection, model_id
            )

            if not circuit_allowed:
                logger.warning(f"Circuit breaker prevented inference: {circuit_reason}")
                # Return simulated result
                return {"success": True, "status": "simulated", "circuit_breaker_active": True}

        # Normal inference logic
        result = await super().run_inference(model_id, inputs, retry_attempts)

        # Update circuit breaker after operation
        if self.enable_enhanced_error_recovery and model_id in self.model_connections:
            connection = self.model_connections[model_id]
            ResourcePoolErrorRecovery.update_circuit_breaker(
                connection,
                success=result.get("success", False),
                model_id=model_id,
                error=result.get("error", None) if not result.get("success", False) else None,
            )

        return result


# --- end of the example --------------------------------------------------------------------------

INPUT = {"input": [[0.25 * i - 2 for i in range(16)]]}


async def test_the_seed_example_serves_real_results(tmp_path: Path) -> None:
    """The example bridge serves toy-mlp with numbers that match numpy, and counts each call once."""
    bridge = EnhancedResourcePoolBridge(max_connections=2, workers="simulated", db=str(tmp_path / "seed.db"))
    assert await bridge.initialize()
    try:
        await bridge.load_model("toy-mlp")
        result = await bridge.run_inference("toy-mlp", INPUT)
        assert result["success"] is True
        assert result["is_simulation"] is True  # a simulated worker computed it, no browser
        expected = reference_forward(resolve_model("toy-mlp"), np.asarray(INPUT["input"], dtype=np.float32))
        np.testing.assert_allclose(result["output"][0], expected, rtol=1e-5, atol=1e-6)
        connection = bridge.model_connections["toy-mlp"]
        assert connection.recorded == type(connection.recorded)()  # the example's update was absorbed
        allowed, reason = ResourcePoolErrorRecovery.check_circuit_breaker(connection, "toy-mlp")
        assert allowed is True
        assert "closed" in reason
    finally:
        await bridge.close()


async def test_an_open_breaker_stops_the_example_before_the_pool(tmp_path: Path) -> None:
    """With the connection's breaker open, check_circuit_breaker says no and why."""
    bridge = EnhancedResourcePoolBridge(
        max_connections=1, workers="simulated", db=str(tmp_path / "seed.db"), max_ejection_share=1.0
    )
    await bridge.initialize()
    try:
        await bridge.load_model("toy-mlp")
        connection = bridge.model_connections["toy-mlp"]
        bridge.pool.registry.connection(connection.connection_id).force_open("test", "isolate it")
        allowed, reason = ResourcePoolErrorRecovery.check_circuit_breaker(connection, "toy-mlp")
        assert allowed is False
        assert "forced_open" in reason
        # Without the example's own short cut, the bridge answers honestly: not a success.
        plain = await ResourcePoolBridge.run_inference(bridge, "toy-mlp", INPUT)
        assert plain["success"] is False
        assert plain["error_type"] == "IsolatedByOperator"  # a CircuitOpen a person caused
        assert plain["is_simulation"] is False
    finally:
        await bridge.close()


async def test_simulation_only_behind_the_option_and_never_a_success_in_the_breakers(tmp_path: Path) -> None:
    """simulate_on_failure answers an unservable request as a flagged simulation; breakers count a failure."""
    bridge = ResourcePoolBridge(
        max_connections=1,
        workers="simulated",
        db=str(tmp_path / "seed.db"),
        simulate_on_failure=True,
        max_ejection_share=1.0,
    )
    await bridge.initialize()
    try:
        await bridge.load_model("toy-mlp")
        connection = bridge.model_connections["toy-mlp"]
        bridge.pool.registry.connection(connection.connection_id).force_open("test", "isolate it")
        answer = await bridge.run_inference("toy-mlp", INPUT)
        assert answer["status"] == "simulated"
        assert answer["is_simulation"] is True
        assert answer["output"] is None
        assert bridge.pool.counters["served"] == 0
    finally:
        await bridge.close()


async def test_recover_connection_returns_the_rung(tmp_path: Path) -> None:
    """recover_connection on a live connection recovers at the ping rung, as (True, 'ping')."""
    bridge = ResourcePoolBridge(max_connections=1, workers="simulated", db=str(tmp_path / "seed.db"))
    await bridge.initialize()
    try:
        await bridge.load_model("toy-mlp")
        connection = bridge.model_connections["toy-mlp"]
        assert await ResourcePoolErrorRecovery.recover_connection(connection) == (True, "ping")
    finally:
        await bridge.close()


async def test_export_telemetry_has_the_seed_keys_and_counts_from_the_log(tmp_path: Path) -> None:
    """Telemetry carries the seed's keys; its request counts equal the events in the log."""
    bridge = ResourcePoolBridge(max_connections=2, workers="simulated", db=str(tmp_path / "seed.db"))
    await bridge.initialize()
    try:
        await bridge.load_model("toy-mlp")
        for _ in range(7):
            assert (await bridge.run_inference("toy-mlp", INPUT))["success"]
        bad = await bridge.run_inference("toy-mlp", {"input": [[1.0]]})
        assert bad["error_type"] == "InvalidInput"
        await bridge.pool.flush()
        telemetry = ResourcePoolErrorRecovery.export_telemetry(
            bridge, include_connections=True, include_models=True
        )
        for key in (
            "timestamp",
            "system",
            "connections",
            "circuit_breaker",
            "connection_details",
            "models",
            "model_details",
            "recovery",
        ):
            assert key in telemetry
        assert set(telemetry["system"]) >= {"cpu_percent", "cpu_count", "memory", "memory_pressure"}
        assert set(telemetry["connections"]) >= {
            "total",
            "healthy",
            "degraded",
            "unhealthy",
            "busy",
            "browser_distribution",
            "platform_distribution",
        }
        assert telemetry["circuit_breaker"] == {"open": 0, "half_open": 0, "closed": 2}
        log = [e async for e in bridge.pool.store.iter_all()]
        served = [e for e in log if e.type == "InferenceServed"]
        served_count = len(served) + sum(e.payload["n"] for e in log if e.type == "InferencesServed")
        failed = [e for e in log if e.type == "InferenceFailed"]
        assert [e.error_kind for e in failed] == ["InvalidInput"]
        metrics = telemetry["model_details"]["toy-mlp"]["metrics"]
        assert metrics["success_count"] == served_count == 7
        assert metrics["failure_count"] == len(failed) == 1
        assert metrics["execution_count"] == 8
        assert metrics["success_rate"] == 7 / 8
        assert telemetry["requests"] == {"total": 8, "served": 7, "failed": 1}
        assert telemetry["recent_errors"][0]["error_kind"] == "InvalidInput"
    finally:
        await bridge.close()


def test_the_seeds_model_breaker_trips_after_3_and_its_connection_breaker_after_5(tmp_path: Path) -> None:
    """The seed's thresholds: 3 for a model on a connection, 5 for the connection."""
    bridge = ResourcePoolBridge(max_connections=1, workers="simulated", db=str(tmp_path / "seed.db"))
    assert bridge.config.model_breaker.consecutive_failures == 3
    assert bridge.config.connection_breaker.consecutive_failures == 5
    custom = ResourcePoolBridge(db=str(tmp_path / "seed.db"), model_failure_threshold=4)
    assert custom.config.model_breaker.consecutive_failures == 4
