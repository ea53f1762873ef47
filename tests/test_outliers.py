"""Outlier ejection relative to peers, on a FakeClock: who is set aside, for how long, how many."""

from __future__ import annotations

import pytest

from poolwarden.clock import FakeClock
from poolwarden.errors import ConfigurationError
from poolwarden.outliers import ConnectionEjected, ConnectionReturned, OutlierDetector, OutlierPolicy

T0 = 5_000.0


def traffic(
    detector: OutlierDetector, failures: dict[str, int], calls: int = 100, latency: float = 0.01
) -> None:
    """``calls`` calls on each connection, ``failures[c]`` of them failed."""
    for connection_id, failed in failures.items():
        for i in range(calls):
            detector.record(connection_id, ok=i >= failed, latency=latency)


def detector(
    policy: OutlierPolicy | None = None, max_share: float = 0.5
) -> tuple[OutlierDetector, FakeClock]:
    """A detector on a fake clock, Envoy's defaults unless told."""
    clock = FakeClock(T0)
    return OutlierDetector(policy or OutlierPolicy(), clock=clock, max_share=max_share), clock


HEALTHY = {f"conn-{i}": 1 for i in range(5)}


def test_a_connection_far_below_its_peers_success_rate_is_ejected() -> None:
    """80% success among peers at 99%: below mean - 1.9 stdev, ejected for the base time, as an event."""
    d, clock = detector()
    traffic(d, {**HEALTHY, "conn-4": 20})
    clock.advance(10)
    d.evaluate()
    (event,) = d.drain_events()
    assert isinstance(event, ConnectionEjected)
    assert (event.connection_id, event.rule, event.ejections) == ("conn-4", "success_rate", 1)
    assert event.value == pytest.approx(0.8)
    assert event.until == clock() + 30.0
    assert d.is_ejected("conn-4")
    assert not d.is_ejected("conn-0")


def test_an_absolute_error_rate_alone_ejects_nobody_when_peers_are_alike() -> None:
    """Every connection fails 20%: none is an outlier relative to its peers."""
    d, clock = detector()
    traffic(d, dict.fromkeys(HEALTHY, 20))
    clock.advance(10)
    d.evaluate()
    assert d.drain_events() == []


def test_too_few_hosts_or_too_little_volume_judges_nobody() -> None:
    """Fewer than success_rate_min_hosts connections with the volume: no judgement (conservative)."""
    d, clock = detector()
    traffic(d, {"conn-0": 1, "conn-1": 1, "conn-2": 1, "conn-3": 90})
    traffic(d, {"conn-4": 0}, calls=99)
    clock.advance(10)
    d.evaluate()
    assert d.drain_events() == []


def test_healthy_intervals_decay_the_ejection_count() -> None:
    """After an ejection, an interval back in service judged fine brings the next one to the base."""
    d, clock = detector()
    traffic(d, {**HEALTHY, "conn-4": 30})
    clock.advance(10)
    d.evaluate()
    clock.advance(30)
    traffic(d, HEALTHY)
    d.evaluate()  # returned, and a healthy interval
    clock.advance(10)
    traffic(d, {**HEALTHY, "conn-4": 30})
    d.evaluate()
    last = d.drain_events()[-1]
    assert isinstance(last, ConnectionEjected)
    assert last.ejections == 1


def test_nothing_is_judged_before_the_interval() -> None:
    """The interval's calls are judged once it has passed."""
    d, clock = detector()
    traffic(d, {**HEALTHY, "conn-4": 50})
    clock.advance(9.9)
    d.evaluate()
    assert d.drain_events() == []


def test_the_ejection_ends_and_repeats_grow_the_wait() -> None:
    """Back after 30 s; ejected again at once, the next lasts 60 s; it decays while healthy."""
    d, clock = detector()
    traffic(d, {**HEALTHY, "conn-4": 30})
    clock.advance(10)
    d.evaluate()
    clock.advance(30)
    traffic(d, {**HEALTHY, "conn-4": 30})
    d.evaluate()
    events = d.drain_events()
    assert [type(e) for e in events] == [ConnectionEjected, ConnectionReturned, ConnectionEjected]
    second = events[-1]
    assert isinstance(second, ConnectionEjected)
    assert (second.ejections, second.until) == (2, clock() + 60.0)


def test_never_more_than_the_max_share_the_worst_first() -> None:
    """Two outliers among six with max_share 0.2: only one (the worst) is ejected."""
    policy = OutlierPolicy(success_rate_stdev_factor=None, failure_percentage_threshold=0.3)
    d, clock = detector(policy, max_share=0.2)
    traffic(d, {**HEALTHY, "conn-5": 1, "conn-3": 40, "conn-4": 60})
    clock.advance(10)
    d.evaluate()
    assert [e.connection_id for e in d.drain_events() if isinstance(e, ConnectionEjected)] == ["conn-4"]


def test_failure_percentage_rule_when_turned_on() -> None:
    """failure_percentage_threshold=0.5 ejects a connection failing 60%, whatever its peers do."""
    policy = OutlierPolicy(success_rate_stdev_factor=None, failure_percentage_threshold=0.5)
    d, clock = detector(policy)
    traffic(d, {**HEALTHY, "conn-1": 55, "conn-4": 60}, calls=100)
    clock.advance(10)
    d.evaluate()
    ejected = {e.connection_id: e.rule for e in d.drain_events() if isinstance(e, ConnectionEjected)}
    assert ejected == {"conn-1": "failure_percentage", "conn-4": "failure_percentage"}


def test_latency_rule_when_turned_on() -> None:
    """latency_stdev_factor=1.5: a connection 10x slower than its peers is ejected."""
    d, clock = detector(OutlierPolicy(success_rate_stdev_factor=None, latency_stdev_factor=1.5))
    traffic(d, HEALTHY, latency=0.01)
    traffic(d, {"conn-5": 0}, latency=0.1)
    clock.advance(10)
    d.evaluate()
    (event,) = d.drain_events()
    assert isinstance(event, ConnectionEjected)
    assert (event.connection_id, event.rule) == ("conn-5", "latency")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"interval": 0}, "interval"),
        ({"base_ejection_seconds": 60, "max_ejection_seconds": 30}, "max_ejection_seconds"),
        ({"failure_percentage_threshold": 2}, "failure_percentage_threshold"),
        ({"success_rate_min_hosts": 0}, "success_rate_min_hosts"),
        ({"latency_stdev_factor": -1}, "latency_stdev_factor"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], fragment: str) -> None:
    """Each bad setting is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=fragment):
        OutlierPolicy(**kwargs)  # type: ignore[arg-type]
