"""Outlier ejection relative to peers: a connection far worse than the others is set aside.

A breaker judges a connection against fixed thresholds; it cannot see that one connection fails
20% of its calls while its peers fail 1%. Envoy's outlier detection can, and no breaker library
does. :class:`OutlierDetector` is that, pure (the time comes from an injected clock, decisions
come out as events to drain):

* the pool reports each call's outcome (:meth:`OutlierDetector.record`: connection, success,
  latency); every ``interval`` seconds (:meth:`OutlierDetector.evaluate`) the detector looks at
  the calls of that interval;
* **success rate** (Envoy's ``success_rate``): among connections with at least
  ``success_rate_request_volume`` calls, when there are at least ``success_rate_min_hosts`` of
  them, a connection whose success rate is below ``mean - success_rate_stdev_factor * stdev`` is
  ejected;
* **failure percentage** (Envoy's ``failure_percentage``, off by default as in Envoy): a
  connection with at least ``failure_percentage_request_volume`` calls whose failure share is at
  least ``failure_percentage_threshold`` is ejected, when ``failure_percentage_min_hosts``
  connections have that volume;
* **latency** (off by default; Envoy has no such rule): among connections with enough volume, one
  whose mean latency is above ``mean + latency_stdev_factor * stdev`` is ejected;
* an ejection lasts ``base_ejection_seconds`` times the number of times the connection has been
  ejected (at most ``max_ejection_seconds``); that count falls by one each interval the
  connection spends back in service without being ejected;
* never more than ``max_share`` of the connections are ejected at once (the pool's
  ``max_ejection_share``): the worst go first.

Each ejection is a :class:`ConnectionEjected` event (with the rule, the connection's value, the
threshold it crossed, and until when), each return a :class:`ConnectionReturned`. Ejection state
is short-lived and not restored after a restart: a new process starts with every connection in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from poolwarden.clock import Clock
from poolwarden.codec import REGISTRY, DomainEvent
from poolwarden.errors import ConfigurationError

__all__ = ["ConnectionEjected", "ConnectionReturned", "OutlierDetector", "OutlierPolicy"]


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """When a connection is ejected relative to its peers; Envoy's names and defaults where it has
    them (``stdev_factor`` 1.9 is Envoy's 1900/1000)."""

    interval: float = 10.0
    base_ejection_seconds: float = 30.0
    max_ejection_seconds: float = 300.0
    success_rate_stdev_factor: float | None = 1.9
    success_rate_min_hosts: int = 5
    success_rate_request_volume: int = 100
    failure_percentage_threshold: float | None = None
    failure_percentage_min_hosts: int = 5
    failure_percentage_request_volume: int = 50
    latency_stdev_factor: float | None = None
    latency_request_volume: int = 100

    def __post_init__(self) -> None:
        for name in ("interval", "base_ejection_seconds", "max_ejection_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(f"outliers.{name} must be a number > 0")
        if self.max_ejection_seconds < self.base_ejection_seconds:
            raise ConfigurationError("outliers.max_ejection_seconds must be >= base_ejection_seconds")
        for name in ("success_rate_stdev_factor", "latency_stdev_factor"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise ConfigurationError(f"outliers.{name} must be a number > 0 (or None: off)")
        threshold = self.failure_percentage_threshold
        if threshold is not None and not (isinstance(threshold, int | float) and 0 < threshold <= 1):
            raise ConfigurationError("outliers.failure_percentage_threshold must be in (0, 1] (or None: off)")
        for name in (
            "success_rate_min_hosts",
            "success_rate_request_volume",
            "failure_percentage_min_hosts",
            "failure_percentage_request_volume",
            "latency_request_volume",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"outliers.{name} must be a whole number >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionEjected(DomainEvent):
    """``connection_id`` was set aside until ``until``: its ``value`` under ``rule``
    (``success_rate``, ``failure_percentage`` or ``latency``) crossed ``threshold``; this is its
    ``ejections``-th ejection in a row."""

    connection_id: str
    rule: str
    value: float
    threshold: float
    until: float
    ejections: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionReturned(DomainEvent):
    """``connection_id``'s ejection ended; it takes requests again."""

    connection_id: str


REGISTRY.register(ConnectionEjected, ConnectionReturned)


class _Tally:
    __slots__ = ("calls", "failures", "latency", "timed")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.latency = 0.0
        self.timed = 0


class OutlierDetector:
    """Ejects connections far worse than their peers (see the module docstring)."""

    def __init__(self, policy: OutlierPolicy, *, clock: Clock, max_share: float) -> None:
        if not 0 < max_share <= 1:
            raise ConfigurationError("max_share must be in (0, 1]")
        self.policy = policy
        self.max_share = max_share
        self._clock = clock
        self._tallies: dict[str, _Tally] = {}
        self._ejected: dict[str, float] = {}  # connection -> until
        self._times: dict[str, int] = {}  # consecutive ejections, decaying while healthy
        self._next = clock() + policy.interval
        self._events: list[DomainEvent] = []

    def record(self, connection_id: str, ok: bool, latency: float | None = None) -> None:
        """One call's outcome on ``connection_id`` (``latency`` in seconds, if known)."""
        tally = self._tallies.get(connection_id)
        if tally is None:
            tally = self._tallies[connection_id] = _Tally()
        tally.calls += 1
        if not ok:
            tally.failures += 1
        if latency is not None:
            tally.latency += latency
            tally.timed += 1

    def forget(self, connection_id: str) -> None:
        """``connection_id`` left the pool: drop what is known of it."""
        self._tallies.pop(connection_id, None)
        self._ejected.pop(connection_id, None)
        self._times.pop(connection_id, None)

    def is_ejected(self, connection_id: str) -> bool:
        """Whether ``connection_id`` is set aside now (call :meth:`evaluate` to bring time forward)."""
        return connection_id in self._ejected

    @property
    def ejected(self) -> dict[str, float]:
        """The ejected connections and until when."""
        return dict(self._ejected)

    def evaluate(self, connections: int | None = None) -> None:
        """Return connections whose ejection ended and, once an interval has passed, judge the
        interval's calls. ``connections`` is the pool's size (default: those that reported)."""
        now = self._clock()
        for connection_id, until in sorted(self._ejected.items()):
            if until <= now:
                del self._ejected[connection_id]
                self._events.append(ConnectionReturned(connection_id=connection_id))
        if now < self._next:
            return
        self._next = now + self.policy.interval
        tallies, self._tallies = self._tallies, {}
        outliers = self._outliers(tallies)
        flagged = {outlier[0] for outlier in outliers}
        for connection_id in list(self._times):  # an interval in service, judged fine: decay
            if connection_id not in self._ejected and connection_id not in flagged:
                self._times[connection_id] -= 1
                if self._times[connection_id] <= 0:
                    del self._times[connection_id]
        total = max(connections or 0, len(set(tallies) | set(self._ejected)))
        room = math.floor(self.max_share * total + 1e-9) - len(self._ejected)
        for connection_id, rule, value, threshold in outliers:
            if room <= 0:
                break
            if connection_id in self._ejected:
                continue
            times = self._times.get(connection_id, 0) + 1
            self._times[connection_id] = times
            seconds = min(self.policy.max_ejection_seconds, self.policy.base_ejection_seconds * times)
            self._ejected[connection_id] = now + seconds
            room -= 1
            self._events.append(
                ConnectionEjected(
                    connection_id=connection_id,
                    rule=rule,
                    value=value,
                    threshold=threshold,
                    until=now + seconds,
                    ejections=times,
                )
            )

    def drain_events(self) -> list[DomainEvent]:
        """The ejections and returns decided since the last drain, oldest first."""
        events, self._events = self._events, []
        return events

    def _outliers(self, tallies: dict[str, _Tally]) -> list[tuple[str, str, float, float]]:
        """(connection, rule, value, threshold) of every outlier, the worst first."""
        policy = self.policy
        found: dict[str, tuple[float, str, float, float]] = {}  # connection -> (badness, ...)

        def note(connection_id: str, badness: float, rule: str, value: float, threshold: float) -> None:
            if connection_id not in found or found[connection_id][0] < badness:
                found[connection_id] = (badness, rule, value, threshold)

        factor = policy.success_rate_stdev_factor
        if factor is not None:
            rates = {
                c: 1.0 - t.failures / t.calls
                for c, t in tallies.items()
                if t.calls >= policy.success_rate_request_volume
            }
            if len(rates) >= policy.success_rate_min_hosts:
                mean, stdev = _mean_stdev(rates.values())
                threshold = mean - factor * stdev
                for c, rate in rates.items():
                    if rate < threshold:
                        note(c, threshold - rate, "success_rate", rate, threshold)
        share = policy.failure_percentage_threshold
        if share is not None:
            volume = {c: t for c, t in tallies.items() if t.calls >= policy.failure_percentage_request_volume}
            if len(volume) >= policy.failure_percentage_min_hosts:
                for c, t in volume.items():
                    failed = t.failures / t.calls
                    if failed >= share:
                        note(c, failed - share, "failure_percentage", failed, share)
        factor = policy.latency_stdev_factor
        if factor is not None:
            means = {
                c: t.latency / t.timed for c, t in tallies.items() if t.timed >= policy.latency_request_volume
            }
            if len(means) >= policy.success_rate_min_hosts:
                mean, stdev = _mean_stdev(means.values())
                threshold = mean + factor * stdev
                for c, latency in means.items():
                    if latency > threshold:
                        note(c, (latency - threshold) / max(threshold, 1e-9), "latency", latency, threshold)
        ranked = sorted(found.items(), key=lambda item: (-item[1][0], item[0]))
        return [(c, rule, value, threshold) for c, (_, rule, value, threshold) in ranked]


def _mean_stdev(values: Iterable[float]) -> tuple[float, float]:
    data = list(values)
    mean = sum(data) / len(data)
    variance = sum((x - mean) ** 2 for x in data) / len(data)
    return mean, math.sqrt(variance)
