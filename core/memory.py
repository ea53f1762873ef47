"""Memory pressure: pure decisions from memory readings.

A :class:`MemoryGovernor` is fed readings of the host (percent used) and of each browser (the
PSS of its whole process tree, in MB), taken elsewhere in the background. It decides:

* the **pressure level**: NORMAL, WARNING (>= ``warning_percent`` of host memory in use) or
  CRITICAL (>= ``critical_percent``); at WARNING and above, new model loads are refused;
* at CRITICAL, which idle models to **evict** (least recently used first) and which browser to
  **recycle** (the one holding the most memory);
* when one browser is over its own cap, or its memory keeps **growing** sample after sample (a
  leak), to recycle that browser.

Like the breaker and the lifecycle machine it never samples, awaits or acts: it takes readings
and the time, and emits events (``MemorySampled``, ``MemoryPressureChanged``,
``MemoryActionDecided``) and commands (:class:`EvictModel`, :class:`RecycleBrowser`) that a
driver carries out.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from poolwarden.clock import Clock
from poolwarden.codec import REGISTRY, DomainEvent, encode, payload
from poolwarden.errors import ConfigurationError, MemoryPressure
from poolwarden.events import NewEvent

__all__ = [
    "BrowserReading",
    "EvictModel",
    "HostReading",
    "LoadedModel",
    "MemoryActionDecided",
    "MemoryEvent",
    "MemoryGovernor",
    "MemoryPolicy",
    "MemoryPressureChanged",
    "MemorySampled",
    "PressureLevel",
    "RecycleBrowser",
]


class PressureLevel(enum.StrEnum):
    """How hard the host is pressed for memory."""

    NORMAL = "normal"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    """Thresholds for memory decisions.

    :param warning_percent: host memory in use at which new model loads are refused.
    :param critical_percent: host memory in use at which idle models are evicted and the
        largest browser is recycled.
    :param hysteresis_percent: how far below a threshold usage must fall to leave its level,
        so that a reading hovering at the line does not flap.
    :param browser_cap_mb: PSS above which one browser is recycled whatever the host says
        (``None``: no cap).
    :param growth_samples: consecutive rising readings of one browser that count as a leak.
    :param growth_min_mb: and by how much it must have grown over them, in all.
    """

    warning_percent: float = 80.0
    critical_percent: float = 90.0
    hysteresis_percent: float = 2.0
    browser_cap_mb: float | None = 4096.0
    growth_samples: int = 6
    growth_min_mb: float = 256.0

    def __post_init__(self) -> None:
        if not 0 < self.warning_percent < self.critical_percent <= 100:
            raise ConfigurationError(
                "memory thresholds need 0 < warning_percent < critical_percent <= 100, got "
                f"{self.warning_percent} and {self.critical_percent}"
            )
        if self.hysteresis_percent < 0 or self.growth_samples < 2 or self.growth_min_mb < 0:
            raise ConfigurationError("hysteresis_percent >= 0, growth_samples >= 2, growth_min_mb >= 0")
        if self.browser_cap_mb is not None and self.browser_cap_mb <= 0:
            raise ConfigurationError("browser_cap_mb must be positive or None")


@dataclass(frozen=True, slots=True)
class HostReading:
    """The host's memory, as psutil.virtual_memory() reports it."""

    percent: float
    available_mb: float
    total_mb: float


@dataclass(frozen=True, slots=True)
class BrowserReading:
    """One browser's memory: the PSS of its whole process tree."""

    connection_id: str
    browser: str
    pss_mb: float


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model loaded on a connection, as the pool knows it."""

    connection_id: str
    model_id: str
    last_used_at: float
    in_flight: int = 0
    queued: int = 0
    """Requests for the model admitted by the pool and not yet ended (running or waiting)."""


@dataclass(frozen=True, slots=True)
class EvictModel:
    """Command: unload this idle model from this connection."""

    connection_id: str
    model_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RecycleBrowser:
    """Command: drain this connection (finish in-flight work, take no new) and restart its browser."""

    connection_id: str
    reason: str


# --- the events (stream ``pool/<name>/memory``), stored by poolwarden.codec ------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEvent(DomainEvent):
    """The base of the memory governor's events; each is stamped with the governor's clock."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemorySampled(MemoryEvent):
    """A memory reading: of the host (``scope`` host: ``percent``, ``available_mb``,
    ``total_mb``) or of one browser (``scope`` browser: ``pss_mb`` of its whole process tree,
    with ``connection_id`` and ``browser``; ``scope`` spare: the same of a warm spare browser,
    ``connection_id`` being the spare's worker id). A scope's payload holds only its own keys."""

    scope: str
    connection_id: str | None = None
    browser: str | None = None
    percent: float | None = field(default=None, metadata=payload(omit_none=True))
    available_mb: float | None = field(default=None, metadata=payload(omit_none=True))
    total_mb: float | None = field(default=None, metadata=payload(omit_none=True))
    pss_mb: float | None = field(default=None, metadata=payload(omit_none=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryPressureChanged(MemoryEvent):
    """The pressure level changed (``from_state`` -> ``to_state``) at a host reading of ``percent``."""

    from_state: PressureLevel
    to_state: PressureLevel
    percent: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryActionDecided(MemoryEvent):
    """The governor decided to evict a model or recycle a browser (``outcome``: evict, recycle)."""

    connection_id: str
    model_id: str | None
    browser: str | None
    outcome: str
    reason: str
    level: PressureLevel


REGISTRY.register(MemorySampled, MemoryPressureChanged, MemoryActionDecided)


@dataclass(slots=True)
class _BrowserTrack:
    browser: str
    readings: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    recycle_pending: bool = False


class MemoryGovernor:
    """Decides on memory pressure from readings; see the module docstring."""

    def __init__(self, policy: MemoryPolicy | None = None, *, clock: Clock) -> None:
        self.policy = policy or MemoryPolicy()
        self._clock = clock
        self.level = PressureLevel.NORMAL
        self.host: HostReading | None = None
        self._browsers: dict[str, _BrowserTrack] = {}
        self.spares_mb: dict[str, float] = {}
        """The last PSS (MiB) of each warm spare browser, by its worker id."""
        self._events: list[NewEvent] = []

    # --- readings -------------------------------------------------------------------------

    def observe_host(self, reading: HostReading) -> PressureLevel:
        """Take a host reading; returns the (possibly new) pressure level."""
        self.host = reading
        now = self._clock()
        self._events.append(
            encode(
                MemorySampled(
                    scope="host",
                    percent=reading.percent,
                    available_mb=reading.available_mb,
                    total_mb=reading.total_mb,
                ),
                now,
            )
        )
        level = self._level_for(reading.percent)
        if level is not self.level:
            changed = MemoryPressureChanged(from_state=self.level, to_state=level, percent=reading.percent)
            self._events.append(encode(changed, now))
            self.level = level
        return level

    def _level_for(self, percent: float) -> PressureLevel:
        policy = self.policy
        gap = policy.hysteresis_percent
        if percent >= policy.critical_percent:
            return PressureLevel.CRITICAL
        if self.level is PressureLevel.CRITICAL and percent > policy.critical_percent - gap:
            return PressureLevel.CRITICAL
        if percent >= policy.warning_percent:
            return PressureLevel.WARNING
        if self.level is not PressureLevel.NORMAL and percent > policy.warning_percent - gap:
            return PressureLevel.WARNING
        return PressureLevel.NORMAL

    def observe_browser(self, reading: BrowserReading) -> None:
        """Take one browser's reading."""
        track = self._browsers.setdefault(reading.connection_id, _BrowserTrack(reading.browser))
        track.browser = reading.browser
        track.readings.append(reading.pss_mb)
        sampled = MemorySampled(
            scope="browser",
            connection_id=reading.connection_id,
            browser=reading.browser,
            pss_mb=reading.pss_mb,
        )
        self._events.append(encode(sampled, self._clock()))

    def observe_spares(self, readings: Iterable[BrowserReading]) -> None:
        """Take the readings of the warm spares (``connection_id``: the spare's worker id); they
        replace the previous ones (a spare promoted or retired is no longer counted)."""
        self.spares_mb = {}
        now = self._clock()
        for reading in readings:
            self.spares_mb[reading.connection_id] = reading.pss_mb
            sampled = MemorySampled(
                scope="spare",
                connection_id=reading.connection_id,
                browser=reading.browser,
                pss_mb=reading.pss_mb,
            )
            self._events.append(encode(sampled, now))

    @property
    def spares_allowed(self) -> bool:
        """Whether warm spares may be kept: only while the pressure is NORMAL."""
        return self.level is PressureLevel.NORMAL

    def forget_browser(self, connection_id: str) -> None:
        """Drop a browser's readings: it was restarted (its memory starts afresh) or closed."""
        self._browsers.pop(connection_id, None)

    def recycle_deferred(self, connection_id: str) -> None:
        """A recycle decided for ``connection_id`` could not start yet (another connection is
        out of service): decide it again at the next round."""
        track = self._browsers.get(connection_id)
        if track is not None:
            track.recycle_pending = False

    # --- decisions --------------------------------------------------------------------------

    def load_refusal(self) -> MemoryPressure | None:
        """The typed error refusing a new model load now (with the reading and the threshold it
        is at or above), or None when loads are allowed."""
        if self.level is PressureLevel.NORMAL:
            return None
        _, reason = self.may_load_model()
        critical = self.level is PressureLevel.CRITICAL
        threshold = self.policy.critical_percent if critical else self.policy.warning_percent
        percent = self.host.percent if self.host is not None else float("nan")
        return MemoryPressure(
            f"not loading a new model: {reason} (threshold {threshold:g}%)",
            level=self.level.value,
            percent=percent,
            threshold=threshold,
        )

    def may_load_model(self) -> tuple[bool, str]:
        """Whether a new model may be loaded now, and why not if not."""
        if self.level is PressureLevel.NORMAL:
            return True, "memory pressure normal"
        percent = self.host.percent if self.host is not None else float("nan")
        return False, f"memory pressure {self.level.value}: host memory {percent:.1f}% in use"

    def decide(self, models: Iterable[LoadedModel]) -> list[EvictModel | RecycleBrowser]:
        """The actions to take now, given the models the pool has loaded.

        Each browser is recycled at most once until :meth:`forget_browser` says it restarted.
        """
        actions: list[EvictModel | RecycleBrowser] = []
        for connection_id, track in self._browsers.items():
            reason = self._browser_reason(track)
            if reason is not None and not track.recycle_pending:
                track.recycle_pending = True
                actions.append(RecycleBrowser(connection_id, reason))
        if self.level is PressureLevel.CRITICAL:
            models = list(models)
            # The most recently used model of each connection is what it serves now: evicting it
            # would turn pressure into an outage (its next request would need a load, which
            # pressure refuses). It goes last, and only a person or a recycle removes it.
            newest: dict[str, LoadedModel] = {}
            for m in models:
                kept = newest.get(m.connection_id)
                if kept is None or m.last_used_at > kept.last_used_at:
                    newest[m.connection_id] = m
            idle = sorted(
                (
                    m
                    for m in models
                    if m.in_flight == 0 and m.queued == 0 and newest[m.connection_id] is not m
                ),
                key=lambda m: m.last_used_at,
            )
            recycling = {a.connection_id for a in actions}
            actions.extend(
                EvictModel(
                    m.connection_id, m.model_id, "critical memory pressure: least recently used idle model"
                )
                for m in idle
                if m.connection_id not in recycling
            )
            # One recycle at a time for host pressure: restarting browsers one after another
            # while the first is still coming back would empty the pool.
            if not any(track.recycle_pending for track in self._browsers.values()):
                largest = self._largest_browser()
                if largest is not None:
                    self._browsers[largest].recycle_pending = True
                    actions.append(
                        RecycleBrowser(largest, "critical memory pressure: the browser holding the most")
                    )
        now = self._clock()
        for action in actions:
            model_id = action.model_id if isinstance(action, EvictModel) else None
            decided = MemoryActionDecided(
                connection_id=action.connection_id,
                model_id=model_id,
                browser=self._browsers[action.connection_id].browser
                if action.connection_id in self._browsers
                else None,
                outcome="evict" if isinstance(action, EvictModel) else "recycle",
                reason=action.reason,
                level=self.level,
            )
            self._events.append(encode(decided, now))
        return actions

    def _browser_reason(self, track: _BrowserTrack) -> str | None:
        policy = self.policy
        readings = track.readings
        if not readings:
            return None
        if policy.browser_cap_mb is not None and readings[-1] > policy.browser_cap_mb:
            return f"browser PSS {readings[-1]:.0f} MB is over its cap of {policy.browser_cap_mb:.0f} MB"
        recent = list(readings)[-policy.growth_samples :]
        if len(recent) == policy.growth_samples and all(b > a for a, b in itertools.pairwise(recent)):
            grown = recent[-1] - recent[0]
            if grown >= policy.growth_min_mb:
                return f"browser PSS grew {grown:.0f} MB over {policy.growth_samples} readings"
        return None

    def _largest_browser(self) -> str | None:
        candidates = [
            (track.readings[-1], connection_id)
            for connection_id, track in self._browsers.items()
            if track.readings
        ]
        return max(candidates)[1] if candidates else None

    def drain_events(self) -> list[NewEvent]:
        """The events decided since the last call (for the ``pool/<name>/memory`` stream)."""
        events, self._events = self._events, []
        return events
