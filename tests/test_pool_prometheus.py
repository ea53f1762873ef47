"""Prometheus exposition of the pool's telemetry: the same figures as export_telemetry, served safely."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from poolwarden.cli import main
from poolwarden.errors import ConfigurationError, InvalidInput, StoreClosed
from poolwarden.memory import HostReading
from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.telemetry import prometheus as pool_prometheus
from poolwarden.telemetry.live import export_telemetry
from poolwarden.telemetry.prometheus import MetricsSnapshot, PoolMetrics, metrics_from_log
from poolwarden.workers.simulated import Fault

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _host() -> HostReading:
    return HostReading(percent=40.0, available_mb=1000, total_mb=16000)


def _config(db: Path) -> PoolConfig:
    return PoolConfig(
        connections=2,
        workers=("simulated",),
        db=db,
        heartbeat_interval=30.0,  # the tests drive faults themselves
        memory_interval=3600.0,
    )


async def _exercise(pool: ResourcePool) -> None:
    """Served requests, one refused for its inputs, a device-lost recovery, a forced-open breaker."""
    await pool.load_model("toy-mlp", connection_id="conn-0")
    for _ in range(5):
        await pool.run_inference("toy-mlp", {"input": X})
    with pytest.raises(InvalidInput):
        await pool.run_inference("toy-mlp", {"input": [[1.0]]})
    await pool.members["conn-0"].handle.worker.inject(Fault.DEVICE_LOST, count=1)  # type: ignore[attr-defined]
    await pool.run_inference("toy-mlp", {"input": X})  # fails on conn-0, served by conn-1
    driver = pool.members["conn-0"].driver
    assert driver is not None
    await driver.wait_for(lambda m: m.incident_id is None and str(m.state.value) == "healthy")
    pool.registry.connection("conn-1").force_open("test", "a sick connection")


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[ResourcePool]:
    async with ResourcePool(_config(tmp_path / "pool.db"), memory_sampler=_host) as pool:
        await _exercise(pool)
        yield pool


def _samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (n, have), value in samples.items() if n == name and wanted <= have)


def _one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_exposition_has_the_counts_export_telemetry_reports(pool: ResourcePool) -> None:
    """Requests, breakers, connections, recovery rungs and memory pressure match export_telemetry."""
    metrics = PoolMetrics(pool)
    await metrics.refresh()
    telemetry = await export_telemetry(pool, include_models=True)
    samples = _samples(metrics.exposition())

    requests = telemetry["requests"]
    assert requests == {"total": 7, "served": 6, "failed": 1}
    assert _total(samples, "poolwarden_inference_requests_total", outcome="served") == requests["served"]
    assert _total(samples, "poolwarden_inference_requests_total", outcome="failed") == requests["failed"]
    model = telemetry["model_details"]["toy-mlp"]["metrics"]
    for connection, counts in model["by_connection"].items():
        where = {"model": "toy-mlp", "connection": "" if connection == "None" else connection}
        served = _one(samples, "poolwarden_inference_requests_total", **where, outcome="served")
        assert served == counts["success_count"]
        assert (
            _one(samples, "poolwarden_inference_requests_total", **where, outcome="failed")
            == (counts["failure_count"])
        )
    latency_sum = _total(samples, "poolwarden_inference_latency_seconds_sum", model="toy-mlp")
    latency_count = _total(samples, "poolwarden_inference_latency_seconds_count", model="toy-mlp")
    assert latency_count == model["success_count"]
    assert latency_sum / latency_count == pytest.approx(model["average_latency_ms"] / 1000)
    maxima = [v for (n, _), v in samples.items() if n == "poolwarden_inference_latency_max_seconds"]
    assert max(maxima) == pytest.approx(model["max_latency_ms"] / 1000)

    assert telemetry["circuit_breaker"] == {"open": 1, "half_open": 0, "closed": 1}
    for state, count in telemetry["circuit_breaker"].items():
        assert _one(samples, "poolwarden_circuit_breakers", state=state) == count
    assert _one(samples, "poolwarden_circuit_breaker_state", key="conn-1", state="forced_open") == 1
    assert _one(samples, "poolwarden_circuit_breaker_state", key="conn-1", state="closed") == 0
    for status in ("healthy", "degraded", "unhealthy"):
        assert _one(samples, "poolwarden_connections", status=status) == telemetry["connections"][status]
    assert _one(samples, "poolwarden_connections_by_browser", browser="simulated") == 2
    assert _one(samples, "poolwarden_models") == telemetry["models"]

    by_rung = telemetry["recovery"]["by_rung"]
    assert by_rung, "the device-lost fault ran the ladder"
    for rung, figures in by_rung.items():
        assert _one(samples, "poolwarden_recovery_attempts_total", rung=rung) == figures["attempts"]
        assert _one(samples, "poolwarden_recovery_successes_total", rung=rung) == figures["successes"]
    recovery = telemetry["recovery"]
    outcomes = (("started", "incidents"), ("recovered", "recovered"), ("quarantined", "quarantined"))
    for outcome, key in outcomes:
        assert _one(samples, "poolwarden_recovery_incidents_total", outcome=outcome) == recovery[key]
    assert recovery["incidents"] >= 1
    pressure = telemetry["system"]["memory_pressure"]
    assert _one(samples, "poolwarden_memory_pressure", level=pressure) == 1
    assert _total(samples, "poolwarden_memory_pressure") == 1


async def test_serve_answers_a_scrape_on_loopback_with_the_same_text(pool: ResourcePool) -> None:
    """GET /metrics on the bound loopback port returns the exposition; after stop() nothing listens."""
    metrics = PoolMetrics(pool)
    await metrics.refresh()
    port = metrics.serve()
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode("utf-8"))

    try:
        assert await asyncio.to_thread(scrape) == metrics.exposition()
        with pytest.raises(ConfigurationError, match="already serving"):
            metrics.serve()
    finally:
        await metrics.stop()
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(scrape)


async def test_the_collector_serves_the_last_snapshot_until_refreshed(pool: ResourcePool) -> None:
    """A request served after a refresh shows only after the next refresh: scrapes never read the pool."""
    metrics = PoolMetrics(pool)
    assert metrics.exposition() == ""  # nothing before the first refresh
    await metrics.refresh()
    before = _total(_samples(metrics.exposition()), "poolwarden_inference_requests_total", outcome="served")
    await pool.run_inference("toy-mlp", {"input": X})
    stale = _total(_samples(metrics.exposition()), "poolwarden_inference_requests_total", outcome="served")
    assert stale == before
    await metrics.refresh()
    fresh = _total(_samples(metrics.exposition()), "poolwarden_inference_requests_total", outcome="served")
    assert fresh == before + 1


async def test_start_refreshes_in_the_background_and_stop_ends_the_task(
    pool: ResourcePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start() refreshes at once, then every interval; a store error is counted; stop() ends the task."""
    with pytest.raises(ConfigurationError, match="positive"):
        await PoolMetrics(pool).start(interval=0)
    real = pool_prometheus.snapshot_of_pool
    calls: list[MetricsSnapshot | None] = []
    third = asyncio.Event()

    async def flaky(pool: ResourcePool, clock: Any) -> MetricsSnapshot:
        if len(calls) == 1:  # the first background refresh fails as a closing store would
            calls.append(None)
            raise StoreClosed("closing")
        snapshot = await real(pool, clock)
        calls.append(snapshot)
        if len(calls) == 3:
            third.set()
        return snapshot

    monkeypatch.setattr(pool_prometheus, "snapshot_of_pool", flaky)
    metrics = await PoolMetrics(pool).start(interval=0.01)
    try:
        assert metrics.snapshot is calls[0] is not None  # refreshed before start() returned
        await asyncio.wait_for(third.wait(), 10)  # a good refresh after the failed one
        assert metrics.refresh_failures == 1
        assert metrics.snapshot is calls[2]
        assert any(t.get_name() == "poolwarden-metrics" for t in asyncio.all_tasks())
    finally:
        await metrics.stop()
    assert not any(t.get_name() == "poolwarden-metrics" for t in asyncio.all_tasks())


def test_cli_prometheus_prints_the_logs_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`poolwarden telemetry --db PATH --prometheus` exposes the counts `telemetry --db PATH` reports."""
    db = tmp_path / "pool.db"

    async def record() -> None:
        async with ResourcePool(_config(db), memory_sampler=_host) as pool:
            await _exercise(pool)

    asyncio.run(record())
    assert main(["telemetry", "--db", str(db)]) == 0
    telemetry = json.loads(capsys.readouterr().out)
    assert main(["telemetry", "--db", str(db), "--prometheus"]) == 0
    samples = _samples(capsys.readouterr().out)
    assert telemetry["requests"] == {"total": 7, "served": 6, "failed": 1}
    assert _total(samples, "poolwarden_inference_requests_total", outcome="served") == 6
    assert _total(samples, "poolwarden_inference_requests_total", outcome="failed") == 1
    for state, count in telemetry["circuit_breaker"].items():
        assert _one(samples, "poolwarden_circuit_breakers", state=state) == count
    assert _one(samples, "poolwarden_circuit_breaker_state", key="conn-1", state="forced_open") == 1
    for rung, figures in telemetry["recovery"]["by_rung"].items():
        assert _one(samples, "poolwarden_recovery_attempts_total", rung=rung) == figures["attempts"]
    assert "poolwarden_host_memory_total_bytes" not in {name for name, _ in samples}  # no live host figures


async def test_metrics_from_log_reads_a_log_without_a_pool(tmp_path: Path) -> None:
    """metrics_from_log on a closed pool's log gives its request counts."""
    db = tmp_path / "pool.db"
    async with ResourcePool(_config(db), memory_sampler=_host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        for _ in range(3):
            await pool.run_inference("toy-mlp", {"input": X})
    samples = _samples(await metrics_from_log(db))
    served = _one(
        samples, "poolwarden_inference_requests_total", model="toy-mlp", connection="conn-0", outcome="served"
    )
    assert served == 3


def _without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every import of prometheus_client (and of the module rendering with it) fail."""
    for name in [n for n in sys.modules if n.partition(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "poolwarden.telemetry.prometheus_families", raising=False)


async def test_without_prometheus_client_use_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without prometheus_client the module imports, but using it raises ConfigurationError."""
    _without_prometheus_client(monkeypatch)
    monkeypatch.delitem(sys.modules, "poolwarden.telemetry.prometheus")
    from poolwarden.telemetry import prometheus  # importing never needs the optional dependency

    with pytest.raises(ConfigurationError, match=r"poolwarden\[prometheus\]"):
        await prometheus.metrics_from_log(tmp_path / "absent.db")
    async with ResourcePool(_config(tmp_path / "pool.db"), memory_sampler=_host) as pool:
        with pytest.raises(ConfigurationError, match="needs prometheus_client"):
            prometheus.PoolMetrics(pool)


def test_cli_without_prometheus_client_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's --prometheus without prometheus_client exits 1 with the extra to install, no traceback."""
    _without_prometheus_client(monkeypatch)
    assert main(["telemetry", "--db", str(tmp_path / "pool.db"), "--prometheus"]) == 1
    assert "pip install 'poolwarden[prometheus]'" in capsys.readouterr().err


async def test_a_pool_configured_with_a_metrics_port_serves_them_while_it_runs(tmp_path: Path) -> None:
    """PoolConfig(metrics_port=0) serves /metrics on loopback from start to close."""
    config = dataclasses.replace(_config(tmp_path / "pool.db"), metrics_port=0)
    async with ResourcePool(config, memory_sampler=_host) as pool:
        assert pool.metrics is not None
        assert pool.metrics.port
        url = f"http://127.0.0.1:{pool.metrics.port}/metrics"

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(response.read().decode("utf-8"))

        assert "poolwarden_connections" in await asyncio.to_thread(scrape)
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(scrape)  # closing the pool stopped the server


def test_telemetry_from_a_log_has_the_same_model_metrics_as_the_live_pool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`telemetry --db --detailed` gives each model the live pool's metrics, latency included."""
    db = tmp_path / "pool.db"
    live: dict[str, Any] = {}

    async def record() -> None:
        async with ResourcePool(_config(db), memory_sampler=_host) as pool:
            await _exercise(pool)
            live.update(await export_telemetry(pool, include_models=True))

    asyncio.run(record())
    assert main(["telemetry", "--db", str(db), "--detailed"]) == 0
    from_log = json.loads(capsys.readouterr().out)["model_details"]["toy-mlp"]
    assert from_log["metrics"] == live["model_details"]["toy-mlp"]["metrics"]
    assert from_log["metrics"]["average_latency_ms"] > 0
    assert from_log["browser"] == "simulated"


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())


async def test_health_endpoints_beside_metrics_say_what_serves_now(tmp_path: Path) -> None:
    """/healthz and /readyz read the pool at request time: 200 ok, 200 degraded with a breaker
    open, 503 once no connection serves; /livez is 200 while the pool's loop answers, 503 when
    it is blocked."""
    async with ResourcePool(_config(tmp_path / "pool.db"), memory_sampler=_host) as pool:
        metrics = PoolMetrics(pool)
        port = metrics.serve()
        base = f"http://127.0.0.1:{port}"
        try:
            status, body = await asyncio.to_thread(_get, base + "/healthz")
            assert (status, body["status"], body["ready"]) == (200, "ok", True)
            assert body["connections"] == {"total": 2, "serving": 2, "serving_ids": ["conn-0", "conn-1"]}
            assert body["memory_pressure"] == "normal"
            pool.registry.connection("conn-1").force_open("test", "sick")
            status, body = await asyncio.to_thread(_get, base + "/readyz")
            assert (status, body["status"], body["open_breakers"]) == (200, "degraded", ["conn-1"])
            pool.registry.connection("conn-0").force_open("test", "sick too")
            status, body = await asyncio.to_thread(_get, base + "/readyz")
            assert (status, body["status"], body["ready"]) == (503, "unavailable", False)
            assert await asyncio.to_thread(_get, base + "/livez") == (200, {"live": True})
            # A blocked loop: the probe, from another thread, gets no answer in time.
            original = pool_prometheus.HEALTH_TIMEOUT
            pool_prometheus.HEALTH_TIMEOUT = 0.2
            try:
                probe = asyncio.get_running_loop().run_in_executor(None, _get, base + "/livez")
                time.sleep(0.6)  # noqa: ASYNC251  (blocks the loop on purpose: that is what is probed)
                status, body = await probe
            finally:
                pool_prometheus.HEALTH_TIMEOUT = original
            assert status == 503
            assert body["live"] is False
            assert "did not answer" in body["reason"]
            await metrics.refresh()
            assert "poolwarden_connections" in (await asyncio.to_thread(_scrape_text, base + "/metrics"))
        finally:
            await metrics.stop()


def _scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode("utf-8"))
