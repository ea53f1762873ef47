"""What a circuit breaker counts, when it trips, and how long it stays open.

A :class:`BreakerPolicy` is a frozen, validated value: every knob of the breaker lives here and
nowhere else, so that the same log can be replayed through another policy (what-if) and a policy
can be written to and read from JSON (``whatif --policy FILE``).

Trip rules, any of which opens a closed breaker:

* ``consecutive_failures``: that many counted failures in a row (the seed's rule, default 5);
* ``failure_rate``: the share of failed calls in the sliding ``window`` (count- or time-based),
  once the window holds ``window.min_calls`` calls;
* ``slow_call_rate``: the share of calls slower than ``slow_call_seconds`` in the same window;
* ``failure_burst``: ``max_failures`` counted failures within ``within_seconds``.

The error taxonomy (:class:`ErrorKind`) says what a failure was; :func:`counts` says whether a
kind counts at a breaker :class:`BreakerLevel`. ``input`` and ``cancelled`` never count (the
caller's fault, or nobody's); ``validation`` (a deterministic model error) counts for a model
breaker and a standalone one, never for a connection breaker.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

from poolwarden.errors import ConfigurationError

__all__ = [
    "NEVER_COUNTED",
    "BreakerLevel",
    "BreakerPolicy",
    "ErrorKind",
    "FailureBurst",
    "HalfOpenRule",
    "OpenBackoff",
    "RandomSource",
    "SlidingWindow",
    "counts",
]


class ErrorKind(enum.StrEnum):
    """What went wrong with a call, as the worker or the wrapped function reported it."""

    TRANSPORT = "transport"
    TIMEOUT = "timeout"
    PROCESS_EXIT = "process_exit"
    PAGE_CRASH = "page_crash"
    DEVICE_LOST = "device_lost"
    OUT_OF_MEMORY = "out_of_memory"
    VALIDATION = "validation"
    INPUT = "input"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


class BreakerLevel(enum.StrEnum):
    """Which thing a breaker protects; decides whether a ``validation`` error counts."""

    CONNECTION = "connection"
    MODEL = "model"
    STANDALONE = "standalone"


NEVER_COUNTED: frozenset[ErrorKind] = frozenset({ErrorKind.INPUT, ErrorKind.CANCELLED})
"""Kinds that say nothing about the health of what is protected, whatever the policy."""


def counts(kind: ErrorKind, level: BreakerLevel) -> bool:
    """Whether ``kind`` is evidence against a breaker of ``level`` (before a policy's ignores)."""
    if kind in NEVER_COUNTED:
        return False
    return not (kind is ErrorKind.VALIDATION and level is BreakerLevel.CONNECTION)


class RandomSource(Protocol):
    """The part of :class:`random.Random` the backoff jitter uses; inject a seeded one in tests."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigurationError(message)


@dataclass(frozen=True, slots=True)
class SlidingWindow:
    """The window the rate rules look at: the last ``size`` calls, or the last ``size`` seconds.

    A time window counts calls in whole-second buckets (as resilience4j does), so a call at
    12.7 s leaves a 10 s window at 23.0 s.
    """

    kind: Literal["count", "time"] = "count"
    size: int = 100
    min_calls: int = 20

    def __post_init__(self) -> None:
        _require(self.kind in ("count", "time"), f"window kind must be 'count' or 'time', not {self.kind!r}")
        _require(
            isinstance(self.size, int) and not isinstance(self.size, bool) and self.size >= 1,
            "window size must be a whole number >= 1",
        )
        _require(self.size <= 100_000, "window size must be <= 100000")
        _require(
            isinstance(self.min_calls, int) and self.min_calls >= 1, "window min_calls must be an int >= 1"
        )
        if self.kind == "count":
            _require(self.min_calls <= self.size, "window min_calls cannot exceed a count window's size")


@dataclass(frozen=True, slots=True)
class FailureBurst:
    """Open after ``max_failures`` counted failures within ``within_seconds``, whatever else succeeded."""

    max_failures: int
    within_seconds: float

    def __post_init__(self) -> None:
        _require(self.max_failures >= 1, "failure_burst.max_failures must be >= 1")
        _require(_positive(self.within_seconds), "failure_burst.within_seconds must be > 0")


@dataclass(frozen=True, slots=True)
class OpenBackoff:
    """How long an open breaker waits before its half-open trial.

    The first open lasts ``base`` seconds. Each consecutive re-open (a failed trial, or a trip
    within ``decay_after`` seconds of the last close) raises the ceiling to
    ``min(cap, base * multiplier ** n)``; with ``jitter="full"`` the wait is drawn uniformly
    between ``base`` and that ceiling, so breakers that failed together do not retry together,
    and none waits less than ``base``. After ``decay_after`` healthy seconds in CLOSED the
    streak is forgotten and the next open starts at ``base`` again.
    """

    base: float = 30.0
    multiplier: float = 2.0
    cap: float = 600.0
    jitter: Literal["full", "none"] = "full"
    decay_after: float = 300.0

    def __post_init__(self) -> None:
        _require(_positive(self.base), "backoff.base must be > 0 seconds")
        _require(_finite(self.multiplier) and self.multiplier >= 1.0, "backoff.multiplier must be >= 1")
        _require(_finite(self.cap) and self.cap >= self.base, "backoff.cap must be >= backoff.base")
        _require(self.jitter in ("full", "none"), f"backoff.jitter is 'full' or 'none', not {self.jitter!r}")
        _require(_positive(self.decay_after), "backoff.decay_after must be > 0 seconds")

    def ceiling(self, streak: int) -> float:
        """The longest wait after ``streak`` consecutive re-opens."""
        # Past ~64 doublings the product overflows nothing but means nothing either.
        return min(self.cap, self.base * self.multiplier ** min(streak, 64))

    def duration(self, streak: int, rng: RandomSource) -> float:
        """The wait for this open; draws from ``rng`` only when there is a spread to draw from."""
        top = self.ceiling(streak)
        if self.jitter == "none" or top <= self.base:
            return top
        return self.base + (top - self.base) * rng.random()


@dataclass(frozen=True, slots=True)
class HalfOpenRule:
    """How a half-open breaker tests the water.

    It admits ``trials`` calls and rejects the rest; once ``ceil(close_ratio * trials)`` of them
    succeed it closes, once that is out of reach it re-opens. A round that lasts longer than
    ``max_seconds`` (a trial hung, or its result was lost) re-opens too.
    """

    trials: int = 1
    close_ratio: float = 1.0
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        _require(self.trials >= 1, "half_open.trials must be >= 1")
        _require(0.0 < self.close_ratio <= 1.0, "half_open.close_ratio must be in (0, 1]")
        _require(_positive(self.max_seconds), "half_open.max_seconds must be > 0")

    @property
    def successes_to_close(self) -> int:
        """How many trial successes close the breaker."""
        return max(1, math.ceil(self.close_ratio * self.trials - 1e-9))


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Every rule of a circuit breaker; invalid values raise :class:`ConfigurationError`."""

    consecutive_failures: int | None = 5
    failure_rate: float | None = None
    slow_call_rate: float | None = None
    slow_call_seconds: float = 5.0
    window: SlidingWindow = field(default_factory=SlidingWindow)
    failure_burst: FailureBurst | None = None
    backoff: OpenBackoff = field(default_factory=OpenBackoff)
    half_open: HalfOpenRule = field(default_factory=HalfOpenRule)
    ignored_kinds: frozenset[ErrorKind] = frozenset()

    def __post_init__(self) -> None:
        if self.consecutive_failures is not None:
            _require(self.consecutive_failures >= 1, "consecutive_failures must be >= 1 (or None)")
        for name in ("failure_rate", "slow_call_rate"):
            rate = getattr(self, name)
            if rate is not None:
                _require(0.0 < rate <= 1.0, f"{name} must be in (0, 1] (or None)")
        _require(_positive(self.slow_call_seconds), "slow_call_seconds must be > 0")
        _require(
            all(isinstance(kind, ErrorKind) for kind in self.ignored_kinds),
            "ignored_kinds must hold ErrorKind values",
        )
        _require(
            any(
                rule is not None
                for rule in (
                    self.consecutive_failures,
                    self.failure_rate,
                    self.slow_call_rate,
                    self.failure_burst,
                )
            ),
            "a policy needs at least one trip rule",
        )

    @property
    def uses_window(self) -> bool:
        """Whether a rate rule needs the sliding window (and successes must be counted in it)."""
        return self.failure_rate is not None or self.slow_call_rate is not None

    def counts(self, kind: ErrorKind, level: BreakerLevel) -> bool:
        """Whether a failure of ``kind`` moves a breaker of ``level`` under this policy."""
        return counts(kind, level) and kind not in self.ignored_kinds

    # --- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain JSON-ready data; :meth:`from_dict` reads it back to an equal policy."""
        data = asdict(self)
        data["ignored_kinds"] = sorted(kind.value for kind in self.ignored_kinds)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BreakerPolicy:
        """Read a policy from :meth:`to_dict`'s shape; missing keys take defaults, unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"a policy is a JSON object, not {type(data).__name__}")
        _reject_unknown(cls, data, "policy")
        kwargs: dict[str, Any] = dict(data)
        try:
            parts = (("window", SlidingWindow), ("backoff", OpenBackoff), ("half_open", HalfOpenRule))
            for name, part in parts:
                if name in kwargs:
                    kwargs[name] = _sub(part, kwargs[name], name)
            if kwargs.get("failure_burst") is not None:
                kwargs["failure_burst"] = _sub(FailureBurst, kwargs["failure_burst"], "failure_burst")
            if "ignored_kinds" in kwargs:
                kwargs["ignored_kinds"] = frozenset(ErrorKind(kind) for kind in kwargs["ignored_kinds"])
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"invalid policy: {exc}") from exc


def _sub(cls: type[Any], value: Any, name: str) -> Any:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"policy.{name} is a JSON object, not {type(value).__name__}")
    _reject_unknown(cls, value, f"policy.{name}")
    return cls(**value)


def _reject_unknown(cls: type[Any], data: Mapping[str, Any], where: str) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigurationError(f"{where} has unknown key(s): {', '.join(sorted(unknown))}")


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: float) -> bool:
    return _finite(value) and value > 0
