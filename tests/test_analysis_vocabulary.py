"""The analyses on events made by the real state machines, so that a change of their vocabulary shows here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

from poolwarden.analysis import (
    connection_timeline,
    incidents,
    load_events,
    memory_samples,
    recovery_success_rates,
)
from poolwarden.clock import FakeClock
from poolwarden.events import NewEvent
from poolwarden.lifecycle import ConnectionLifecycle
from poolwarden.lifecycle_events import stream_of
from poolwarden.lifecycle_types import Suspected
from poolwarden.memory import BrowserReading, HostReading, MemoryGovernor
from tests.analysis_scenario import T0, write_events


@pytest.fixture
def machine_log(tmp_path: Path) -> pd.DataFrame:
    """A lifecycle that recovers from a hung page by crash-and-reload, and a memory governor's samples."""
    clock = FakeClock(T0)
    life = ConnectionLifecycle("conn-7", browser="chromium", clock=clock, ids=lambda: "inc-7")
    memory = MemoryGovernor(clock=clock)
    life.hello()
    clock.advance(10)
    life.fault(Suspected())
    clock.advance(1)
    life.step_failed(life.attempt, "timeout")  # the ping went unanswered
    clock.advance(2)
    life.step_succeeded(life.attempt)  # the page reloaded
    memory.observe_browser(BrowserReading("conn-7", "chromium", 512.0))
    memory.observe_host(HostReading(percent=40.0, available_mb=12_000.0, total_mb=20_000.0))
    clock.advance(0.5)
    life.step_succeeded(life.attempt)  # and answered a round trip
    events: list[tuple[str, NewEvent]] = [
        (stream_of("conn-7"), e.to_new_event()) for e in life.drain_events()
    ]
    events += [("pool/main/memory", e) for e in memory.drain_events()]
    path = tmp_path / "machines.db"
    asyncio.run(write_events(path, events))
    return load_events(path)


def test_lifecycle_incident_reads_as_its_story(machine_log: pd.DataFrame) -> None:
    """The machine's incident: a ping that failed, a reconnect that worked, 3.5 s from fault to healthy."""
    (incident,) = incidents(machine_log).itertuples(index=False)
    assert incident.incident_id == "inc-7"
    assert incident.trigger == "suspected"
    assert incident.error_kind == "timeout"
    assert incident.decisions == ["ping", "reconnect"]
    assert incident.actions == ["ping:failed", "reconnect:succeeded"]
    assert incident.outcome == "recovered"
    assert incident.duration == pd.Timedelta(seconds=3.5)


def test_lifecycle_rates_and_states(machine_log: pd.DataFrame) -> None:
    """Success rates and the state timeline come out of the machine's own events."""
    rates = recovery_success_rates(machine_log).set_index("rung")
    assert rates.loc["ping", ["attempts", "successes"]].tolist() == [1, 0]
    assert rates.loc["reconnect", ["attempts", "successes"]].tolist() == [1, 1]
    assert rates.loc["reconnect", "median_recover_s"] == pytest.approx(3.5)
    states = connection_timeline(machine_log)
    assert states["state"].astype(str).tolist() == [
        "starting",
        "healthy",
        "pinging",
        "reconnecting",
        "healthy",
    ]


def test_memory_governor_samples(machine_log: pd.DataFrame) -> None:
    """The governor's browser sample is read; its host sample, which has no PSS, is left out."""
    samples = memory_samples(machine_log)
    assert samples[["connection_id", "browser"]].astype(str).values.tolist() == [["conn-7", "chromium"]]
    assert samples["pss_mb"].tolist() == [512.0]
