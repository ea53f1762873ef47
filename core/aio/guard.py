"""Circuit breakers for any call: a decorator and a context manager keyed by name.

In memory, for one process's lifetime::

    import poolwarden

    @poolwarden.circuit("payments-api")
    async def charge(order): ...

    with poolwarden.circuit("reports-db"):
        run_query()

Durable, so that an open breaker is still open after a restart (state in an event store)::

    async with poolwarden.open_breakers("breakers.db") as breakers:
        @breakers.circuit("payments-api")
        async def charge(order): ...

A rejected call raises :class:`~poolwarden.errors.CircuitOpen` (with ``retry_at``) without
running. An exception from the call is classified into an :class:`~poolwarden.policy.ErrorKind`
(:func:`classify_exception`, or your own ``classify``) and re-raised unchanged; kinds that never
count (``input``, ``cancelled``) leave the breaker as it was.

Which exceptions count can also be said per guard, as resilience4j's ``recordExceptions`` /
``ignoreExceptions`` and pybreaker's ``exclude`` do: ``circuit(name, failure=..., ignore=...,
success=...)``, each an exception class, a tuple of them, or a predicate on the exception.
``ignore`` wins, then ``success``; with ``failure`` given, an exception it does not match counts
as a success (resilience4j's rule); an ignored exception counts as nothing, as a cancellation.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from poolwarden.aio.durable_breakers import DurableBreakers
from poolwarden.breaker import CircuitBreaker, Decision
from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.classify import classify
from poolwarden.clock import Clock, system_clock
from poolwarden.errors import CircuitOpen, ConfigurationError
from poolwarden.policy import NEVER_COUNTED, BreakerPolicy, ErrorKind, RandomSource
from poolwarden.storage import open_store
from poolwarden.storage.base import EventStore

__all__ = ["Breakers", "ExceptionMatch", "Guard", "circuit", "classify_exception", "judging", "open_breakers"]

P = ParamSpec("P")
R = TypeVar("R")

Classifier = Callable[[BaseException], ErrorKind]
"""Says what kind of failure an exception is."""

ExceptionMatch = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
"""Which exceptions a guard's ``failure``, ``ignore`` or ``success`` means: a class, a tuple of
classes, or a predicate."""


def _matcher(match: ExceptionMatch | None, name: str) -> Callable[[BaseException], bool] | None:
    if match is None:
        return None
    if isinstance(match, tuple):
        classes: tuple[type[BaseException], ...] = match
    elif isinstance(match, type):
        classes = (match,)
    elif callable(match):
        return match
    else:
        raise ConfigurationError(f"{name} is an exception class, a tuple of them, or a predicate")
    if not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
        raise ConfigurationError(f"{name} must hold exception classes only")

    def matches(exc: BaseException) -> bool:
        return isinstance(exc, classes)

    return matches


def judging(
    classify: Classifier,
    *,
    failure: ExceptionMatch | None = None,
    ignore: ExceptionMatch | None = None,
    success: ExceptionMatch | None = None,
) -> Callable[[BaseException], ErrorKind | None]:
    """What a guard makes of an exception: an ErrorKind to record as a failure, or ``None`` for a
    success. ``ignore`` yields ``cancelled`` (a kind that never counts), ``success`` ``None``;
    with ``failure`` given, an exception it does not match is a success, and one it matches is
    ``classify``'s kind (``unknown`` if that kind would never count)."""
    is_failure = _matcher(failure, "failure")
    is_ignored = _matcher(ignore, "ignore")
    is_success = _matcher(success, "success")

    def judge(exc: BaseException) -> ErrorKind | None:
        if is_ignored is not None and is_ignored(exc):
            return ErrorKind.CANCELLED
        if is_success is not None and is_success(exc):
            return None
        if is_failure is None:
            return classify(exc)
        if not is_failure(exc):
            return None
        kind = classify(exc)
        return ErrorKind.UNKNOWN if kind in NEVER_COUNTED else kind

    return judge


def classify_exception(exc: BaseException) -> ErrorKind:
    """The default classifier of a guard: :func:`poolwarden.classify.classify` with its defaults
    (cancellation, timeout, ``InvalidInput``, a ``ModelError``'s kind, connection and OS errors,
    ``MemoryError``, else unknown)."""
    return classify(exc)


class Guard:
    """One protected call: a context manager (sync or async) and a decorator.

    As a context manager a guard serves one call at a time (ask :meth:`Breakers.circuit` for a
    new one per call, it is cheap); as a decorator it serves any number of concurrent calls.
    """

    __slots__ = ("_classify", "_decision", "_started", "_timer", "breaker")

    def __init__(
        self,
        breaker: CircuitBreaker,
        classify: Callable[[BaseException], ErrorKind | None],
        timer: Callable[[], float] | None,
    ) -> None:
        self.breaker = breaker
        self._classify = classify
        self._timer = timer
        self._decision: Decision | None = None
        self._started = 0.0

    def _begin(self) -> None:
        if self._decision is not None:
            raise ConfigurationError(f"guard {self.breaker.key!r} is already in use; take a new one per call")
        decision = self.breaker.allow()
        if not decision:
            raise CircuitOpen(self.breaker.key, decision.reason, decision.retry_at)
        self._decision = decision
        if self._timer is not None:
            self._started = self._timer()

    def _end(self, exc: BaseException | None) -> None:
        decision, self._decision = self._decision, None
        assert decision is not None
        duration = None if self._timer is None else self._timer() - self._started
        kind = None if exc is None else self._classify(exc)
        if kind is None:
            self.breaker.record_success(decision.permit, duration)
        else:
            self.breaker.record_failure(kind, duration, decision.permit)

    def __enter__(self) -> Guard:
        self._begin()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end(exc)

    async def __aenter__(self) -> Guard:
        self._begin()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end(exc)

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Protect ``fn`` (sync or async): each call goes through the breaker.

        The wrappers inline what ``with guard:`` does, without a guard object per call; an
        untimed guard's sync wrapper is the breaker's fast path (an admitted call in a closed
        breaker costs one ``allow`` and one ``record_success``, no clock).
        """
        breaker, classify, timer = self.breaker, self._classify, self._timer
        allow, succeeded, failed = breaker.allow, breaker.record_success, breaker.record_failure

        def admit() -> Decision:
            decision = allow()
            if not decision.allowed:
                raise CircuitOpen(breaker.key, decision.reason, decision.retry_at)
            return decision

        if timer is None and not inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            def guarded_untimed(*args: P.args, **kwargs: P.kwargs) -> Any:
                decision = allow()
                if not decision.allowed:
                    raise CircuitOpen(breaker.key, decision.reason, decision.retry_at)
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    kind = classify(exc)
                    if kind is None:
                        succeeded(decision.permit)
                    else:
                        failed(kind, None, decision.permit)
                    raise
                succeeded(decision.permit)
                return result

            return guarded_untimed

        def took(started: float | None) -> float | None:
            return None if timer is None or started is None else timer() - started

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                decision = admit()
                started = None if timer is None else timer()
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    kind = classify(exc)
                    if kind is None:
                        succeeded(decision.permit, took(started))
                    else:
                        failed(kind, took(started), decision.permit)
                    raise
                succeeded(decision.permit, took(started))
                return result

            return guarded_async

        assert timer is not None  # the untimed sync wrapper is above

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            decision = admit()
            started = timer()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                kind = classify(exc)
                if kind is None:
                    succeeded(decision.permit, timer() - started)
                else:
                    failed(kind, timer() - started, decision.permit)
                raise
            succeeded(decision.permit, timer() - started)
            return result

        return guarded


class Breakers:
    """Named breakers; in memory as constructed, durable through :func:`open_breakers`."""

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        clock: Clock = system_clock,
        rng: RandomSource | None = None,
        classify: Classifier = classify_exception,
        timer: Callable[[], float] = time.perf_counter,
        registry: BreakerRegistry | None = None,
        durable: DurableBreakers | None = None,
        time_calls: bool | None = None,
    ) -> None:
        if rng is None:
            rng = random.Random()  # the I/O edge: the pure breakers draw only from what they are given
        self.registry = (
            registry if registry is not None else BreakerRegistry(named_policy=policy, clock=clock, rng=rng)
        )
        self._classify = classify
        self._timer = timer
        self._time_calls = time_calls
        """Whether guards time their calls: ``None`` (the default) only for a breaker whose
        policy judges slowness (``slow_call_rate``); untimed calls log no duration."""
        self._durable = durable

    def breaker(self, name: str) -> CircuitBreaker:
        """The breaker called ``name`` (for manual control: ``force_open``, ``reset`` ...)."""
        return self.registry.named(name)

    async def flush(self) -> None:
        """Wait until every breaker event recorded before the call is committed to the log
        (nothing to wait for when the breakers are in memory only)."""
        if self._durable is not None:
            await self._durable.flush()

    async def force_open(self, name: str, who: str, why: str) -> None:
        """Hold ``name`` open until someone changes it; returns once that is in the log, so an
        operator's override survives the process being killed the moment after."""
        self.breaker(name).force_open(who, why)
        await self.flush()

    async def trip(self, name: str, who: str, why: str) -> None:
        """Open ``name`` for the policy's normal timed wait, after which its trials decide (see
        :meth:`CircuitBreaker.trip`); durable when it returns."""
        self.breaker(name).trip(who, why)
        await self.flush()

    async def disable(self, name: str, who: str, why: str) -> None:
        """Let every call through ``name`` and count nothing; durable when it returns."""
        self.breaker(name).disable(who, why)
        await self.flush()

    async def metrics_only(self, name: str, who: str, why: str) -> None:
        """Count calls through ``name`` but never reject one; durable when it returns."""
        self.breaker(name).metrics_only(who, why)
        await self.flush()

    async def reset(self, name: str, who: str, why: str) -> None:
        """Close ``name`` and end any manual override; durable when it returns."""
        self.breaker(name).reset(who, why)
        await self.flush()

    def circuit(
        self,
        name: str,
        *,
        failure: ExceptionMatch | None = None,
        ignore: ExceptionMatch | None = None,
        success: ExceptionMatch | None = None,
    ) -> Guard:
        """A guard on the breaker ``name``: decorate a function with it, or enter it around a call.

        ``failure``, ``ignore`` and ``success`` say which exceptions count how (see the module
        docstring); without them every exception is classified and kinds decide."""
        judge: Callable[[BaseException], ErrorKind | None] = self._classify
        if failure is not None or ignore is not None or success is not None:
            judge = judging(self._classify, failure=failure, ignore=ignore, success=success)
        breaker = self.registry.named(name)
        timed = self._time_calls
        if timed is None:
            timed = breaker.policy.slow_call_rate is not None
        return Guard(breaker, judge, self._timer if timed else None)

    __call__ = circuit


_DEFAULT = Breakers()


def circuit(
    name: str,
    *,
    failure: ExceptionMatch | None = None,
    ignore: ExceptionMatch | None = None,
    success: ExceptionMatch | None = None,
) -> Guard:
    """A guard on the process-wide in-memory breaker ``name`` (see :class:`Breakers`)."""
    return _DEFAULT.circuit(name, failure=failure, ignore=ignore, success=success)


@contextlib.asynccontextmanager
async def open_breakers(
    store: EventStore | str | os.PathLike[str],
    *,
    policy: BreakerPolicy | None = None,
    clock: Clock = system_clock,
    rng: RandomSource | None = None,
    classify: Classifier = classify_exception,
    snapshot_every: int = 10,
    flush_interval: float = 0.25,
    summary_interval: float = 30.0,
    poll_interval: float | None = 0.5,
    claim_trials: bool | None = None,
    trial_claim_timeout: float | None = None,
) -> AsyncIterator[Breakers]:
    """Durable named breakers: restored from ``store`` (an open store, or a path to open) at entry.

    Their events are flushed every ``flush_interval`` seconds and at exit. Other processes may
    open the same breakers on the same log: each persists its own events, and their
    transitions (a trip, a close, an override) reach this one within ``poll_interval`` seconds
    (``None``: only when an append meets them). Half-open trials are claimed through the log
    (``claim_trials``, on by default when polling): a round's trials run in one process only,
    whatever the number of processes. See :mod:`poolwarden.aio.durable_breakers`.
    """
    if rng is None:
        rng = random.Random()
    registry = BreakerRegistry(named_policy=policy, clock=clock, rng=rng)
    async with contextlib.AsyncExitStack() as stack:
        if not isinstance(store, EventStore):
            store = await stack.enter_async_context(open_store(store))
        durable = await stack.enter_async_context(
            DurableBreakers(
                store,
                registry,
                snapshot_every=snapshot_every,
                flush_interval=flush_interval,
                summary_interval=summary_interval,
                poll_interval=poll_interval,
                claim_trials=claim_trials,
                trial_claim_timeout=trial_claim_timeout,
            )
        )
        yield Breakers(registry=registry, classify=classify, durable=durable)
