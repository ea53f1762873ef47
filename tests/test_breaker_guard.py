"""The standalone API: a decorator and a context manager keyed by name, sync or async."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from poolwarden.aio.guard import Breakers, circuit, classify_exception, open_breakers
from poolwarden.breaker import BreakerState
from poolwarden.breaker_events import CallFailed
from poolwarden.clock import FakeClock
from poolwarden.errors import CircuitOpen, ConfigurationError, InvalidInput, ModelError
from poolwarden.policy import BreakerPolicy, ErrorKind, HalfOpenRule, OpenBackoff
from poolwarden.storage import open_store

T0 = 1_800_000_000.0
POLICY = BreakerPolicy(consecutive_failures=3, backoff=OpenBackoff(base=30.0, jitter="none"))


class Ticks:
    """A timer that advances one second per reading, so each call lasts exactly 1 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def breakers(clock: FakeClock, policy: BreakerPolicy = POLICY) -> Breakers:
    """In-memory named breakers on a fake clock."""
    return Breakers(policy, clock=clock, timer=Ticks())


def test_sync_decorator_counts_failures_and_then_rejects_without_calling() -> None:
    """Three failures open the breaker; the fourth call raises CircuitOpen and never runs."""
    clock = FakeClock(T0)
    calls = []
    guard = breakers(clock)

    @guard.circuit("flaky")
    def fetch() -> None:
        calls.append(clock())
        raise ConnectionResetError("peer went away")

    for _ in range(3):
        with pytest.raises(ConnectionResetError):
            fetch()
    with pytest.raises(CircuitOpen) as refused:
        fetch()
    assert len(calls) == 3
    assert refused.value.key == "flaky"
    assert refused.value.retry_at == T0 + 30.0


async def test_async_decorator_passes_results_and_records_durations() -> None:
    """An async protected function returns its value; a slow one counts toward the slow-call rule."""
    clock = FakeClock(T0)
    policy = BreakerPolicy(consecutive_failures=None, slow_call_rate=1.0, slow_call_seconds=0.5)
    guard = breakers(clock, policy)

    @guard("model-api")
    async def infer(x: int) -> int:
        return x * 2

    results = [await infer(i) for i in range(20)]
    assert results == [i * 2 for i in range(20)]
    # Every call lasted 1 s on the Ticks timer, over the 0.5 s threshold: the window is all slow.
    assert guard.breaker("model-api").state is BreakerState.OPEN


async def test_async_context_manager_reraises_and_classifies() -> None:
    """An exception inside ``async with`` is re-raised unchanged and counted by its kind."""
    clock = FakeClock(T0)
    guard = breakers(clock)
    for _ in range(3):
        with pytest.raises(TimeoutError):
            async with guard.circuit("db"):
                raise TimeoutError("query took too long")
    assert guard.breaker("db").state is BreakerState.OPEN


def test_input_errors_never_open_the_breaker() -> None:
    """The caller's own mistakes (InvalidInput) pass through without counting."""
    clock = FakeClock(T0)
    guard = breakers(clock)
    for _ in range(10):
        with pytest.raises(InvalidInput), guard.circuit("api"):
            raise InvalidInput("bad shape")
    assert guard.breaker("api").state is BreakerState.CLOSED


def test_a_guard_serves_one_call_at_a_time() -> None:
    """Entering a guard that is already in use is refused; a fresh guard per call works."""
    guard = breakers(FakeClock(T0))
    held = guard.circuit("x")
    with held, pytest.raises(ConfigurationError, match="already in use"), held:
        pass
    with guard.circuit("x"), guard.circuit("x"):
        pass


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (asyncio.CancelledError(), ErrorKind.CANCELLED),
        (TimeoutError(), ErrorKind.TIMEOUT),
        (ConnectionRefusedError(), ErrorKind.TRANSPORT),
        (OSError(), ErrorKind.TRANSPORT),
        (MemoryError(), ErrorKind.OUT_OF_MEMORY),
        (InvalidInput("x"), ErrorKind.INPUT),
        (ModelError("x", "device_lost"), ErrorKind.DEVICE_LOST),
        (ModelError("x", "weird"), ErrorKind.UNKNOWN),
        (RuntimeError(), ErrorKind.UNKNOWN),
    ],
)
def test_default_classification(exc: BaseException, kind: ErrorKind) -> None:
    """Each exception maps to the most specific error kind."""
    assert classify_exception(exc) is kind


def test_module_level_circuit_shares_breakers_by_name() -> None:
    """poolwarden's process-wide circuit() hands out guards on one breaker per name."""
    assert circuit("shared-name").breaker is circuit("shared-name").breaker
    assert circuit("shared-name").breaker is not circuit("other-name").breaker


async def test_thousand_concurrent_calls_on_half_open_admit_exactly_the_trials() -> None:
    """1,000 concurrent calls on a half-open breaker with 3 trials: 3 run, 997 are rejected."""
    clock = FakeClock(T0)
    policy = BreakerPolicy(
        consecutive_failures=1,
        backoff=OpenBackoff(base=30.0, jitter="none"),
        half_open=HalfOpenRule(trials=3),
    )
    guard = breakers(clock, policy)
    breaker = guard.breaker("svc")
    breaker.record_failure(ErrorKind.TRANSPORT)
    clock.advance(30.0)
    release = asyncio.Event()
    attempted = asyncio.Event()
    running = 0
    outcomes = {"ran": 0, "rejected": 0}

    @guard("svc")
    async def call() -> None:
        nonlocal running
        running += 1
        await release.wait()
        outcomes["ran"] += 1

    async def attempt() -> None:
        try:
            await call()
        except CircuitOpen:
            outcomes["rejected"] += 1
        if outcomes["rejected"] + running == 1_000:
            attempted.set()

    tasks = [asyncio.create_task(attempt()) for _ in range(1_000)]
    await attempted.wait()
    assert running == 3  # all three trials are in flight at once
    release.set()
    await asyncio.gather(*tasks)
    assert outcomes == {"ran": 3, "rejected": 997}
    assert breaker.state is BreakerState.CLOSED


async def test_cancelled_trial_frees_its_slot() -> None:
    """A half-open trial whose task is cancelled leaves the breaker half-open with its slot free."""
    clock = FakeClock(T0)
    guard = breakers(clock, BreakerPolicy(consecutive_failures=1, backoff=OpenBackoff(jitter="none")))
    breaker = guard.breaker("svc")
    breaker.record_failure(ErrorKind.TRANSPORT)
    clock.advance(30.0)
    started = asyncio.Event()

    @guard("svc")
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


async def test_durable_breakers_survive_a_restart(tmp_path: Path) -> None:
    """A breaker opened through open_breakers is still open when the same file is opened again."""
    clock = FakeClock(T0)
    db = tmp_path / "guards.db"
    async with open_breakers(db, policy=POLICY, clock=clock) as first:

        @first.circuit("payments")
        async def charge() -> None:
            raise ConnectionError("card gateway down")

        for _ in range(3):
            with pytest.raises(ConnectionError):
                await charge()
    async with open_breakers(db, policy=POLICY, clock=clock) as second:
        with pytest.raises(CircuitOpen):
            async with second.circuit("payments"):
                pass
        assert second.breaker("payments").retry_at == T0 + 30.0


_OVERRIDER = """
import asyncio, sys
from poolwarden.aio.guard import open_breakers

async def main():
    # A flush interval of an hour: nothing but the override's own flush can put it in the log.
    async with open_breakers(sys.argv[1], flush_interval=3600.0) as breakers:
        await breakers.{action}("payments-api", "alice", "gateway maintenance")
        print("done", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("action", "state"),
    [("force_open", BreakerState.FORCED_OPEN), ("disable", BreakerState.DISABLED)],
)
async def test_an_override_is_in_the_log_when_it_returns_even_if_the_process_is_killed(
    tmp_path: Path, action: str, state: BreakerState
) -> None:
    """SIGKILL right after ``await breakers.force_open(...)`` returned: the next process finds the
    override (who, why) in the log and the breaker in that state."""
    db = tmp_path / "breakers.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OVERRIDER.replace("{action}", action),
        str(db),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line == b"done\n", (await child.communicate())[1]
    finally:
        child.kill()
        await child.wait()
    async with open_breakers(db) as breakers:
        assert breakers.breaker("payments-api").state is state
    async with open_store(db, read_only=True) as store:
        (overridden,) = [
            e for e in await store.read_stream("breaker/payments-api") if e.type == "BreakerOverridden"
        ]
    assert (overridden.payload["who"], overridden.payload["why"]) == ("alice", "gateway maintenance")


async def test_flush_on_open_breakers_commits_what_was_recorded_before_it(tmp_path: Path) -> None:
    """``await breakers.flush()`` returns once the failures recorded before it are in the log."""
    db = tmp_path / "breakers.db"
    async with open_breakers(db, flush_interval=3600.0) as breakers:
        breakers.breaker("x").record_failure(ErrorKind.TRANSPORT)
        await breakers.flush()
        async with open_store(db, read_only=True) as store:
            assert [e.type for e in await store.read_stream("breaker/x")] == ["CallFailed"]


@pytest.mark.parametrize(
    ("policy", "time_calls", "timed"),
    [
        (POLICY, None, False),  # no slow-call rule: the fast path, no clock read
        (BreakerPolicy(consecutive_failures=3, slow_call_rate=0.5), None, True),
        (POLICY, True, True),  # asked for: durations logged without a slow-call rule
        (BreakerPolicy(consecutive_failures=3, slow_call_rate=0.5), False, False),
    ],
)
@pytest.mark.parametrize("style", ["sync", "async", "with"])
async def test_calls_are_timed_only_when_a_rule_or_the_caller_needs_it(
    policy: BreakerPolicy, time_calls: bool | None, timed: bool, style: str
) -> None:
    """A guard reads the timer only for a policy that judges slowness, or when asked
    (``time_calls``); an untimed failure is logged with no duration, a timed one with its own."""
    timer = Ticks()
    guard = Breakers(policy, clock=FakeClock(T0), timer=timer, time_calls=time_calls)

    def fail() -> None:
        raise ConnectionError("down")

    async def fail_async() -> None:
        raise ConnectionError("down")

    if style == "sync":
        with pytest.raises(ConnectionError):
            guard.circuit("api")(fail)()
    elif style == "async":
        with pytest.raises(ConnectionError):
            await guard.circuit("api")(fail_async)()
    else:
        with pytest.raises(ConnectionError), guard.circuit("api"):
            fail()
    (event,) = guard.breaker("api").drain_events()
    assert isinstance(event, CallFailed)
    assert event.duration == (1.0 if timed else None)
    assert timer.now == (2.0 if timed else 0.0)
