"""Memory pressure decisions, from injected readings."""

from __future__ import annotations

import pytest

from poolwarden.clock import FakeClock
from poolwarden.errors import ConfigurationError
from poolwarden.memory import (
    BrowserReading,
    EvictModel,
    HostReading,
    LoadedModel,
    MemoryGovernor,
    MemoryPolicy,
    PressureLevel,
    RecycleBrowser,
)


def _host(percent: float) -> HostReading:
    return HostReading(percent=percent, available_mb=(100 - percent) * 160, total_mb=16_000)


@pytest.mark.parametrize(
    ("readings", "level"),
    [
        ([50.0], PressureLevel.NORMAL),
        ([80.0], PressureLevel.WARNING),
        ([90.0], PressureLevel.CRITICAL),
        ([91.0, 89.0], PressureLevel.CRITICAL),  # within the hysteresis band below critical
        ([91.0, 87.0], PressureLevel.WARNING),
        ([81.0, 79.0], PressureLevel.WARNING),
        ([81.0, 77.0], PressureLevel.NORMAL),
        ([79.9], PressureLevel.NORMAL),
    ],
)
def test_pressure_levels_with_hysteresis(
    clock: FakeClock, readings: list[float], level: PressureLevel
) -> None:
    """Host readings set the level at 80 % and 90 %, and leave it only 2 points below the line."""
    governor = MemoryGovernor(clock=clock)
    for percent in readings:
        governor.observe_host(_host(percent))
    assert governor.level is level


def test_level_changes_are_events(clock: FakeClock) -> None:
    """Every change of level is a MemoryPressureChanged event with from and to states."""
    governor = MemoryGovernor(clock=clock)
    for percent in (50, 85, 86, 95, 60):
        governor.observe_host(_host(percent))
        clock.advance(5)
    changes = [
        (e.from_state, e.to_state) for e in governor.drain_events() if e.type == "MemoryPressureChanged"
    ]
    assert changes == [("normal", "warning"), ("warning", "critical"), ("critical", "normal")]


def test_loads_refused_from_warning_on(clock: FakeClock) -> None:
    """New model loads are allowed at NORMAL and refused, with the reading, at WARNING and CRITICAL."""
    governor = MemoryGovernor(clock=clock)
    governor.observe_host(_host(70))
    assert governor.may_load_model()[0] is True
    governor.observe_host(_host(83.5))
    allowed, reason = governor.may_load_model()
    assert allowed is False
    assert "83.5%" in reason


def test_critical_evicts_idle_models_least_recently_used_first_and_recycles_the_largest(
    clock: FakeClock,
) -> None:
    """At CRITICAL, idle models are evicted oldest first, busy ones kept, and the largest browser recycled."""
    governor = MemoryGovernor(MemoryPolicy(browser_cap_mb=None), clock=clock)
    governor.observe_browser(BrowserReading("c1", "chromium", 900))
    governor.observe_browser(BrowserReading("c2", "chromium", 1500))
    governor.observe_host(_host(93))
    models = [
        LoadedModel("c1", "recent", last_used_at=300),
        LoadedModel("c1", "old", last_used_at=100),
        LoadedModel("c1", "busy", last_used_at=50, in_flight=2),
    ]
    actions = governor.decide(models)
    assert actions == [  # "recent", the connection's most recently used, is kept: it serves now
        EvictModel("c1", "old", "critical memory pressure: least recently used idle model"),
        RecycleBrowser("c2", "critical memory pressure: the browser holding the most"),
    ]
    decided = [e for e in governor.drain_events() if e.type == "MemoryActionDecided"]
    assert [(e.connection_id, e.outcome) for e in decided] == [("c1", "evict"), ("c2", "recycle")]


def test_critical_never_evicts_the_newest_model_nor_one_with_requests_queued(clock: FakeClock) -> None:
    """At CRITICAL the most recently used model of each connection stays, and so does a model
    that requests wait for; the others go, oldest first."""
    governor = MemoryGovernor(MemoryPolicy(browser_cap_mb=None), clock=clock)
    governor.observe_host(_host(95))
    models = [
        LoadedModel("c1", "only", last_used_at=10),
        LoadedModel("c2", "newest", last_used_at=300),
        LoadedModel("c2", "waited-for", last_used_at=100, queued=3),
        LoadedModel("c2", "oldest", last_used_at=50),
    ]
    evicted = [(a.connection_id, a.model_id) for a in governor.decide(models) if isinstance(a, EvictModel)]
    assert evicted == [("c2", "oldest")]


def test_a_refused_load_is_a_typed_memory_pressure_with_reading_and_threshold(clock: FakeClock) -> None:
    """At WARNING and CRITICAL the refusal is MemoryPressure carrying the level, reading and threshold."""
    governor = MemoryGovernor(clock=clock)
    governor.observe_host(_host(70))
    assert governor.load_refusal() is None
    governor.observe_host(_host(85))
    warning = governor.load_refusal()
    assert warning is not None
    assert (warning.level, warning.percent, warning.threshold) == ("warning", 85, 80)
    governor.observe_host(_host(93))
    critical = governor.load_refusal()
    assert critical is not None
    assert (critical.level, critical.percent, critical.threshold) == ("critical", 93, 90)


def test_only_one_pressure_recycle_at_a_time(clock: FakeClock) -> None:
    """While one browser recycles for host pressure no second is picked; after it restarts, one may be."""
    governor = MemoryGovernor(MemoryPolicy(browser_cap_mb=None), clock=clock)
    governor.observe_browser(BrowserReading("c1", "chromium", 900))
    governor.observe_browser(BrowserReading("c2", "chromium", 1500))
    governor.observe_host(_host(95))
    assert [a for a in governor.decide([]) if isinstance(a, RecycleBrowser)] == [
        RecycleBrowser("c2", "critical memory pressure: the browser holding the most")
    ]
    assert governor.decide([]) == []
    governor.forget_browser("c2")
    assert governor.decide([]) == [
        RecycleBrowser("c1", "critical memory pressure: the browser holding the most")
    ]


def test_browser_over_its_cap_is_recycled_at_any_host_level(clock: FakeClock) -> None:
    """A browser above browser_cap_mb is recycled even when the host is at ease, once."""
    governor = MemoryGovernor(MemoryPolicy(browser_cap_mb=1000), clock=clock)
    governor.observe_host(_host(30))
    governor.observe_browser(BrowserReading("c1", "chromium", 1200))
    (action,) = governor.decide([])
    assert isinstance(action, RecycleBrowser)
    assert "over its cap" in action.reason
    assert governor.decide([]) == []


def test_steady_growth_is_treated_as_a_leak(clock: FakeClock) -> None:
    """A browser whose PSS rises reading after reading by enough is recycled; a plateau is not."""
    policy = MemoryPolicy(browser_cap_mb=None, growth_samples=4, growth_min_mb=100)
    governor = MemoryGovernor(policy, clock=clock)
    for pss in (500, 520, 510, 530):  # not monotonic
        governor.observe_browser(BrowserReading("c1", "chromium", pss))
    assert governor.decide([]) == []
    for pss in (560, 600, 650):
        governor.observe_browser(BrowserReading("c1", "chromium", pss))
    (action,) = governor.decide([])
    assert action == RecycleBrowser("c1", "browser PSS grew 120 MB over 4 readings")


def test_samples_are_events_with_the_browser_column(clock: FakeClock) -> None:
    """Each reading is a MemorySampled event; a browser's carries its connection and browser columns."""
    governor = MemoryGovernor(clock=clock)
    governor.observe_browser(BrowserReading("c1", "firefox", 321.5))
    (event,) = governor.drain_events()
    assert (event.type, event.connection_id, event.browser) == ("MemorySampled", "c1", "firefox")
    assert event.payload == {"scope": "browser", "pss_mb": 321.5}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warning_percent": 90, "critical_percent": 80},
        {"critical_percent": 101},
        {"growth_samples": 1},
        {"browser_cap_mb": 0},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    """A policy that cannot be meant raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        MemoryPolicy(**kwargs)
