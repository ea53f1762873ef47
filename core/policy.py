"""What a circuit breaker counts, when it trips, and how long it stays open.

A :class:`BreakerPolicy` is a frozen, validated value: every knob of the breaker lives here and
nowhere else, so that the same log can be replayed through another policy (what-if) and a policy
can be written to and read from JSON (``whatif --policy FILE``).

Trip rules, any of which opens a closed breaker:

* ``consecutive_failures``: that many counted failures in a row (the seed's rule; 5 when no other
  rule is named, off when one is: a policy has the rules it names, and :attr:`BreakerPolicy.rules`
  and its repr say which are on);
* ``failure_rate``: the share of failed calls in the sliding ``window`` (count- or time-based),
  once the window holds ``window.min_calls`` calls;
* ``slow_call_rate``: the share of calls slower than ``slow_call_seconds`` (strictly, as in
  resilience4j) in the same window;
* ``failure_burst``: ``max_failures`` counted failures within ``within_seconds``.

The error taxonomy (:class:`ErrorKind`) says what a failure was; :func:`counts` says whether a
kind counts at a breaker :class:`BreakerLevel`. ``input`` and ``cancelled`` never count (the
caller's fault, or nobody's); ``validation`` (a deterministic model error) counts for a model
breaker and a standalone one, never for a connection breaker.

A policy is read from a JSON or TOML file with :meth:`BreakerPolicy.from_file`; every bad value is
refused with a :class:`ConfigurationError` that names the setting in the file's terms.
"""

from __future__ import annotations

import enum
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

from poolwarden.errors import ConfigurationError

__all__ = [
    "DEFAULT_CONSECUTIVE_FAILURES",
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


def _shown(value: object) -> str:
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    return f"{value!r} (a {type(value).__name__})"


def _number(value: object, name: str, *, optional: bool = False) -> None:
    """Refuse a value that is not a real number, in words a policy file's author understands."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        extra = " (or null to turn it off)" if optional else ""
        raise ConfigurationError(f"{name} must be a number{extra}, not {_shown(value)}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number, not {value!r}")


def _whole(value: object, name: str, *, optional: bool = False) -> None:
    """Refuse a value that is not a whole number."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        extra = " (or null to turn it off)" if optional else ""
        raise ConfigurationError(f"{name} must be a whole number{extra}, not {_shown(value)}")


def _choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        options = " or ".join(repr(choice) for choice in choices)
        raise ConfigurationError(f"{name} must be {options}, not {_shown(value)}")


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
        _choice(self.kind, "window kind", ("count", "time"))
        _whole(self.size, "window size")
        _require(self.size >= 1, "window size must be a whole number >= 1")
        _require(self.size <= 100_000, "window size must be <= 100000")
        _whole(self.min_calls, "window min_calls")
        _require(self.min_calls >= 1, "window min_calls must be a whole number >= 1")
        if self.kind == "count":
            _require(self.min_calls <= self.size, "window min_calls cannot exceed a count window's size")


@dataclass(frozen=True, slots=True)
class FailureBurst:
    """Open after ``max_failures`` counted failures within ``within_seconds``, whatever else succeeded."""

    max_failures: int
    within_seconds: float

    def __post_init__(self) -> None:
        _whole(self.max_failures, "failure_burst.max_failures")
        _number(self.within_seconds, "failure_burst.within_seconds")
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
        for name in ("base", "multiplier", "cap", "decay_after"):
            _number(getattr(self, name), f"backoff.{name}")
        _choice(self.jitter, "backoff.jitter", ("full", "none"))
        _require(_positive(self.base), "backoff.base must be > 0 seconds")
        _require(_finite(self.multiplier) and self.multiplier >= 1.0, "backoff.multiplier must be >= 1")
        _require(_finite(self.cap) and self.cap >= self.base, "backoff.cap must be >= backoff.base")
        _require(_positive(self.decay_after), "backoff.decay_after must be > 0 seconds")

    @classmethod
    def fixed(cls, seconds: float) -> OpenBackoff:
        """Always wait ``seconds`` (pybreaker's ``reset_timeout``, resilience4j's and Polly's
        ``waitDurationInOpenState`` / ``BreakDuration``): no growth, no jitter."""
        _number(seconds, "backoff seconds")
        return cls(base=float(seconds), multiplier=1.0, cap=float(seconds), jitter="none")

    def ceiling(self, streak: int) -> float:
        """The longest wait after ``streak`` consecutive re-opens."""
        # Past ~64 doublings the product overflows nothing but means nothing either.
        return min(self.cap, self.base * self.multiplier ** min(streak, 64))

    def duration(self, streak: int, rng: RandomSource) -> float:
        """The wait for this open; draws from ``rng`` only when there is a spread to draw from."""
        return self.wait(streak, self.draw(streak, rng))

    def draw(self, streak: int, rng: RandomSource) -> float | None:
        """The jitter's draw for this open from ``rng``, or ``None`` when there is nothing to draw."""
        if self.jitter == "none" or self.ceiling(streak) <= self.base:
            return None
        return rng.random()

    def wait(self, streak: int, draw: float | None) -> float:
        """The wait after ``streak`` re-opens for a jitter ``draw`` in [0, 1) (``None``: the ceiling)."""
        top = self.ceiling(streak)
        if draw is None or self.jitter == "none" or top <= self.base:
            return top
        return self.base + (top - self.base) * draw


@dataclass(frozen=True, slots=True)
class HalfOpenRule:
    """How a half-open breaker tests the water.

    It admits ``trials`` calls and rejects the rest. It closes once ``successes`` of them succeed
    (by default ``ceil(close_ratio * trials)``; give one or the other). ``verdict`` says when the
    round is judged: ``"early"`` (the default) decides as soon as the outcome is certain, closing
    at the last success needed and re-opening once that is out of reach; ``"round"`` (as
    resilience4j does) waits until every trial has reported. A round that lasts longer than
    ``max_seconds`` from its first trial (a trial hung, or its result was lost) re-opens;
    ``max_seconds=None`` turns that off, and a lost trial then holds the round until someone acts.

    When the policy has a slow-call rule, a trial that succeeds slowly counts against the round,
    as a failed one does (so a breaker opened for slowness does not close on slow trials).
    """

    trials: int = 1
    close_ratio: float = 1.0
    max_seconds: float | None = 60.0
    successes: int | None = None
    verdict: Literal["early", "round"] = "early"

    def __post_init__(self) -> None:
        _whole(self.trials, "half_open.trials")
        _number(self.close_ratio, "half_open.close_ratio")
        _number(self.max_seconds, "half_open.max_seconds", optional=True)
        _whole(self.successes, "half_open.successes", optional=True)
        _choice(self.verdict, "half_open.verdict", ("early", "round"))
        _require(self.trials >= 1, "half_open.trials must be >= 1")
        _require(0.0 < self.close_ratio <= 1.0, "half_open.close_ratio must be in (0, 1]")
        if self.max_seconds is not None:
            _require(_positive(self.max_seconds), "half_open.max_seconds must be > 0 (or null: no limit)")
        if self.successes is not None:
            _require(
                1 <= self.successes <= self.trials,
                "half_open.successes must be between 1 and half_open.trials",
            )
            _require(
                self.close_ratio == 1.0,
                "half_open takes successes (a count) or close_ratio (a share), not both",
            )

    @property
    def successes_to_close(self) -> int:
        """How many trial successes close the breaker."""
        if self.successes is not None:
            return self.successes
        return max(1, math.ceil(self.close_ratio * self.trials - 1e-9))


class _DefaultLimit(int):
    """The default of ``consecutive_failures``: 5, unless the policy names another trip rule."""

    __slots__ = ()


DEFAULT_CONSECUTIVE_FAILURES: int = _DefaultLimit(5)
"""``consecutive_failures`` when a policy names no other trip rule (the seed's 5)."""


@dataclass(frozen=True, slots=True, repr=False)
class BreakerPolicy:
    """Every rule of a circuit breaker; invalid values raise :class:`ConfigurationError`.

    A policy has the trip rules it names: ``BreakerPolicy(failure_rate=0.5)`` trips on the
    failure rate only. Name none and it trips on 5 consecutive failures (the seed's rule).
    :attr:`rules` lists what is on, and so does the repr.

    ``judge_rates`` says when the rate rules are checked: ``"every_call"`` (after every outcome,
    as resilience4j does: a success that fills the window to ``min_calls`` can trip it) or
    ``"after_failure"`` (as Polly does: only a failed call, or a slow one, can trip on a rate).
    """

    consecutive_failures: int | None = DEFAULT_CONSECUTIVE_FAILURES
    failure_rate: float | None = None
    slow_call_rate: float | None = None
    slow_call_seconds: float = 5.0
    window: SlidingWindow = field(default_factory=SlidingWindow)
    failure_burst: FailureBurst | None = None
    backoff: OpenBackoff = field(default_factory=OpenBackoff)
    half_open: HalfOpenRule = field(default_factory=HalfOpenRule)
    ignored_kinds: frozenset[ErrorKind] = frozenset()
    judge_rates: Literal["every_call", "after_failure"] = "every_call"

    def __post_init__(self) -> None:
        if type(self.consecutive_failures) is _DefaultLimit:
            others = (self.failure_rate, self.slow_call_rate, self.failure_burst)
            named = any(rule is not None for rule in others)
            # Frozen: the resolved default is set once, here, so equality and to_dict see it.
            object.__setattr__(self, "consecutive_failures", None if named else 5)
        _whole(self.consecutive_failures, "consecutive_failures", optional=True)
        if self.consecutive_failures is not None:
            _require(self.consecutive_failures >= 1, "consecutive_failures must be >= 1 (or null: off)")
        for name in ("failure_rate", "slow_call_rate"):
            rate = getattr(self, name)
            _number(rate, name, optional=True)
            if rate is not None:
                _require(0.0 < rate <= 1.0, f"{name} must be in (0, 1] (or null: off)")
        _number(self.slow_call_seconds, "slow_call_seconds")
        _require(_positive(self.slow_call_seconds), "slow_call_seconds must be > 0")
        for name, part in (("window", SlidingWindow), ("backoff", OpenBackoff), ("half_open", HalfOpenRule)):
            _require(isinstance(getattr(self, name), part), f"{name} must be a {part.__name__}")
        _require(
            self.failure_burst is None or isinstance(self.failure_burst, FailureBurst),
            "failure_burst must be a FailureBurst (or null: off)",
        )
        _choice(self.judge_rates, "judge_rates", ("every_call", "after_failure"))
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
    def rules(self) -> tuple[str, ...]:
        """The trip rules that are on, as ``name=value`` (what the repr and ``policy check`` show)."""
        on: list[str] = []
        if self.consecutive_failures is not None:
            on.append(f"consecutive_failures={self.consecutive_failures}")
        if self.failure_rate is not None:
            on.append(f"failure_rate={self.failure_rate}")
        if self.slow_call_rate is not None:
            on.append(f"slow_call_rate={self.slow_call_rate} (slower than {self.slow_call_seconds} s)")
        if self.failure_burst is not None:
            burst = self.failure_burst
            on.append(f"failure_burst={burst.max_failures} in {burst.within_seconds} s")
        return tuple(on)

    def explain(self) -> list[str]:
        """What the policy does, in sentences (``poolwarden policy check`` prints them)."""
        window = self.window
        span = f"the last {window.size} calls" if window.kind == "count" else f"the last {window.size} s"
        lines = [f"trips on: {'; '.join(self.rules)}"]
        if self.uses_window:
            when = "after every call" if self.judge_rates == "every_call" else "after a failed or slow call"
            lines.append(f"rates over {span}, once it holds {window.min_calls} calls, judged {when}")
        backoff = self.backoff
        if backoff.multiplier == 1.0 or backoff.cap == backoff.base:
            lines.append(f"open for {backoff.base} s each time")
        else:
            spread = ", drawn between base and the ceiling" if backoff.jitter == "full" else ""
            lines.append(
                f"open for {backoff.base} s, re-opens up to x{backoff.multiplier} each, at most "
                f"{backoff.cap} s{spread}; forgotten after {backoff.decay_after} s closed"
            )
        rule = self.half_open
        verdict = (
            "as soon as the outcome is certain" if rule.verdict == "early" else "once every trial reported"
        )
        limit = "no time limit" if rule.max_seconds is None else f"re-opens after {rule.max_seconds} s"
        slow = "; a slow trial counts as failed" if self.slow_call_rate is not None else ""
        lines.append(
            f"half-open: {rule.trials} trial(s), closes on {rule.successes_to_close} success(es), "
            f"judged {verdict}; {limit}{slow}"
        )
        if self.ignored_kinds:
            lines.append(f"ignores: {', '.join(sorted(kind.value for kind in self.ignored_kinds))}")
        return lines

    def __repr__(self) -> str:
        settings = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"BreakerPolicy(<trips on: {'; '.join(self.rules)}> {settings})"

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
    def from_file(cls, path: str | os.PathLike[str]) -> BreakerPolicy:
        """Read a policy from a ``.json`` or ``.toml`` file (:meth:`from_dict`'s shape).

        TOML has no null: there, ``false`` turns off a setting that JSON turns off with ``null``
        (``consecutive_failures = false``, ``max_seconds = false`` under ``[half_open]``).
        """
        name = os.fspath(path)
        try:
            with open(name, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise ConfigurationError(f"cannot read policy file {name}: {exc.strerror or exc}") from exc
        try:
            if name.endswith(".toml"):
                data: Any = _toml_nulls(tomllib.loads(raw.decode("utf-8")))
            else:
                data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            kind = "TOML" if name.endswith(".toml") else "JSON"
            raise ConfigurationError(f"policy file {name} is not valid {kind}: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ConfigurationError as exc:
            raise ConfigurationError(f"policy file {name}: {exc}") from None

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
                kwargs["ignored_kinds"] = _kinds(kwargs["ignored_kinds"])
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"invalid policy: {exc}") from exc


_OFF_IN_TOML: dict[str | None, frozenset[str]] = {
    None: frozenset({"consecutive_failures", "failure_rate", "slow_call_rate", "failure_burst"}),
    "half_open": frozenset({"max_seconds", "successes"}),
}


def _toml_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """TOML's ``false`` for the settings whose JSON ``null`` means off."""
    out = {
        key: None if value is False and key in _OFF_IN_TOML[None] else value for key, value in data.items()
    }
    part = out.get("half_open")
    if isinstance(part, dict):
        out["half_open"] = {
            key: None if value is False and key in _OFF_IN_TOML["half_open"] else value
            for key, value in part.items()
        }
    return out


def _kinds(values: Any) -> frozenset[ErrorKind]:
    known = ", ".join(kind.value for kind in ErrorKind)
    if isinstance(values, str) or not isinstance(values, list | tuple | set | frozenset):
        raise ConfigurationError(
            f"ignored_kinds must be a list of error kinds ({known}), not {_shown(values)}"
        )
    kinds = set()
    for value in values:
        try:
            kinds.add(ErrorKind(value))
        except ValueError:
            raise ConfigurationError(
                f"ignored_kinds: {value!r} is not an error kind; use one of {known}"
            ) from None
    return frozenset(kinds)


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
