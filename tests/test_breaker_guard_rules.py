"""The standalone guard's say over which exceptions count, and the durable manual trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolwarden.aio.guard import Breakers, open_breakers
from poolwarden.breaker import BreakerState
from poolwarden.clock import FakeClock
from poolwarden.errors import CircuitOpen, ConfigurationError
from poolwarden.policy import BreakerPolicy, HalfOpenRule, OpenBackoff
from poolwarden.storage import open_store

T0 = 1_800_000_000.0
ONE = BreakerPolicy(consecutive_failures=1, backoff=OpenBackoff.fixed(30.0), half_open=HalfOpenRule(trials=1))


class NotFound(Exception):
    """An HTTP 404: the caller's business, not the service's health."""


def calls(breakers: Breakers, name: str, exc: BaseException, **rules: object) -> BreakerState:
    """Raise ``exc`` through a guard with ``rules``; the breaker's state after."""

    @breakers.circuit(name, **rules)  # type: ignore[arg-type]
    def call() -> None:
        raise exc

    with pytest.raises(type(exc)):
        call()
    return breakers.breaker(name).state


def test_failure_classes_count_and_other_exceptions_are_successes() -> None:
    """failure=(...) is resilience4j's recordExceptions: only those count, the rest are successes."""
    breakers = Breakers(ONE, clock=FakeClock(T0))
    assert calls(breakers, "a", KeyError("x"), failure=(ConnectionError, TimeoutError)) is BreakerState.CLOSED
    assert calls(breakers, "a", ConnectionResetError(), failure=(ConnectionError,)) is BreakerState.OPEN


def test_a_failure_predicate_decides() -> None:
    """A predicate may look into the exception (a status code, say)."""
    breakers = Breakers(ONE, clock=FakeClock(T0))
    server_error = RuntimeError("503")
    assert calls(breakers, "b", RuntimeError("404"), failure=lambda e: str(e).startswith("5")) is (
        BreakerState.CLOSED
    )
    assert calls(breakers, "b", server_error, failure=lambda e: str(e).startswith("5")) is BreakerState.OPEN


def test_ignored_exceptions_count_for_nothing_and_free_a_trial() -> None:
    """ignore=... (resilience4j's ignoreExceptions) neither trips nor closes; a trial slot is freed."""
    clock = FakeClock(T0)
    breakers = Breakers(ONE, clock=clock)
    assert calls(breakers, "c", NotFound(), ignore=NotFound) is BreakerState.CLOSED
    assert calls(breakers, "c", ConnectionResetError(), ignore=NotFound) is BreakerState.OPEN
    clock.advance(30)
    assert calls(breakers, "c", NotFound(), ignore=NotFound) is BreakerState.HALF_OPEN
    assert breakers.breaker("c").allow()  # the ignored trial gave its slot back


def test_success_exceptions_count_as_successes() -> None:
    """success=... (pybreaker's exclude) counts the exception as a success: a trial closes on it."""
    clock = FakeClock(T0)
    breakers = Breakers(ONE, clock=clock)
    assert calls(breakers, "d", ConnectionResetError()) is BreakerState.OPEN
    clock.advance(30)
    assert calls(breakers, "d", NotFound(), success=NotFound) is BreakerState.CLOSED


def test_bad_rules_are_refused() -> None:
    """A rule that is neither exception classes nor a predicate is a ConfigurationError."""
    breakers = Breakers(ONE, clock=FakeClock(T0))
    with pytest.raises(ConfigurationError, match="exception class"):
        breakers.circuit("e", failure=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="exception classes only"):
        breakers.circuit("e", ignore=(NotFound, int))  # type: ignore[arg-type]


async def test_async_guard_and_context_manager_follow_the_rules() -> None:
    """The async decorator and the context manager judge exceptions the same way."""
    breakers = Breakers(ONE, clock=FakeClock(T0))

    @breakers.circuit("f", ignore=NotFound)
    async def fetch() -> None:
        raise NotFound

    with pytest.raises(NotFound):
        await fetch()
    with pytest.raises(NotFound):
        async with breakers.circuit("f", ignore=NotFound):
            raise NotFound
    assert breakers.breaker("f").state is BreakerState.CLOSED
    with pytest.raises(ValueError, match="bad"), breakers.circuit("f", failure=ValueError):
        raise ValueError("bad")
    assert breakers.breaker("f").state is BreakerState.OPEN


async def test_a_durable_trip_is_in_the_log_when_it_returns(tmp_path: Path) -> None:
    """``await breakers.trip(...)`` opens for the timed wait, and the next process finds it open."""
    db = tmp_path / "breakers.db"
    clock = FakeClock(T0)
    async with open_breakers(db, policy=ONE, clock=clock, flush_interval=3600.0) as breakers:
        await breakers.trip("payments-api", "alice", "failing over the gateway")
        async with open_store(db, read_only=True) as store:
            (opened,) = [
                e for e in await store.read_stream("breaker/payments-api") if e.type == "BreakerOpened"
            ]
        assert opened.payload["who"] == "alice"
        assert opened.payload["reason"] == "manual"
        with pytest.raises(CircuitOpen) as refused, breakers.circuit("payments-api"):
            pass
        assert refused.value.retry_at == T0 + 30.0
    async with open_breakers(db, policy=ONE, clock=clock) as breakers:
        assert breakers.breaker("payments-api").state is BreakerState.OPEN
    clock.advance(30)
    async with open_breakers(db, policy=ONE, clock=clock) as breakers:
        assert breakers.breaker("payments-api").state is BreakerState.HALF_OPEN
