"""Summaries of successful requests: what the tally writes, and what telemetry and analysis read back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from poolwarden.analysis import latency_percentiles, load_events
from poolwarden.clock import FakeClock
from poolwarden.events import NewEvent
from poolwarden.pool.tally import SERVED_SUMMARY, ServedTally
from poolwarden.storage import open_store
from poolwarden.telemetry.queries import log_counts


def test_a_drain_makes_one_summary_per_connection_model_and_backend() -> None:
    """Each (connection, model, browser, backend) gets one event: count, every latency, first and last."""
    clock = FakeClock(100.0)
    tally = ServedTally(clock=clock)
    tally.add("conn-0", "toy-mlp", "chromium", "webgpu", 1.23456)
    clock.advance(1.0)
    tally.add("conn-0", "toy-mlp", "chromium", "webgpu", 3.0)
    tally.add("conn-1", "toy-mlp", "firefox", "js", 7.5)
    clock.advance(0.5)
    events = {(e.connection_id, e.payload["backend"]): e for e in tally.drain()}
    assert set(events) == {("conn-0", "webgpu"), ("conn-1", "js")}
    first = events[("conn-0", "webgpu")]
    assert first.type == SERVED_SUMMARY
    assert (first.model_id, first.browser, first.outcome, first.occurred_at) == (
        "toy-mlp",
        "chromium",
        "success",
        101.5,
    )
    assert first.payload["n"] == 2
    assert first.payload["latency_ms"] == [1.235, 3.0]
    assert first.payload["latency_ms_total"] == pytest.approx(4.235, abs=1e-3)
    assert first.payload["latency_ms_max"] == 3.0
    assert (first.payload["first_at"], first.payload["last_at"]) == (100.0, 101.0)
    assert events[("conn-1", "js")].payload["n"] == 1
    assert tally.drain() == []  # a drain takes everything; the next one starts afresh


def test_telemetry_and_analysis_count_summarised_and_single_successes_alike(tmp_path: Path) -> None:
    """log_counts and latency_percentiles see every request, whether summarised or recorded alone."""
    path = tmp_path / "log.db"
    clock = FakeClock(1_800_000_000.0)
    tally = ServedTally(clock=clock)
    for latency in (1.0, 2.0, 3.0, 4.0):
        tally.add("conn-0", "toy-mlp", "chromium", "webgpu", latency)
    single = NewEvent(
        type="InferenceServed",
        occurred_at=clock(),
        connection_id="conn-0",
        model_id="toy-mlp",
        browser="chromium",
        outcome="success",
        latency_ms=10.0,
        payload={"backend": "webgpu", "attempts": 2},
    )

    async def write() -> None:
        async with open_store(path) as store:
            await store.append("pool/main", [*tally.drain(), single])
            (counts,) = (await log_counts(store)).requests
            assert (counts.model_id, counts.served, counts.failed) == ("toy-mlp", 5, 0)
            assert counts.latency_ms_mean == pytest.approx(20.0 / 5)
            assert counts.latency_ms_max == 10.0

    asyncio.run(write())
    table = latency_percentiles(load_events(path), by="model_id", percentiles=(0.5,))
    row = table.set_index("model_id").loc["toy-mlp"]
    assert (row["count"], row["p50_ms"], row["max_ms"]) == (5, 3.0, 10.0)
