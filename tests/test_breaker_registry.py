"""The breaker registry: two levels, lazy creation, idle eviction."""

from __future__ import annotations

import random

import pytest

from poolwarden.breaker import BreakerState, CircuitBreaker, TrialClaim
from poolwarden.breaker_registry import BreakerRegistry, model_key
from poolwarden.clock import FakeClock
from poolwarden.errors import ConfigurationError
from poolwarden.policy import BreakerLevel, BreakerPolicy, ErrorKind, OpenBackoff
from tests._breaker_support import CountingSource

T0 = 1_000.0
QUICK = BreakerPolicy(consecutive_failures=3, backoff=OpenBackoff(base=10.0, cap=60.0, jitter="none"))


def registry(clock: FakeClock) -> BreakerRegistry:
    """A registry whose breakers trip on 3 failures and wait 10 s."""
    return BreakerRegistry(
        connection_policy=QUICK, model_policy=QUICK, clock=clock, rng=random.Random(0), idle_after=60.0
    )


def test_breakers_are_created_once_per_key_with_their_level() -> None:
    """Asking twice for a key gives the same breaker; each level gets its identity columns."""
    reg = registry(FakeClock(T0))
    conn = reg.connection("c1")
    model = reg.model("c1", "mlp")
    assert reg.connection("c1") is conn
    assert reg.model("c1", "mlp") is model
    assert (conn.level, conn.connection_id, conn.model_id) == (BreakerLevel.CONNECTION, "c1", None)
    assert (model.key, model.level, model.model_id) == ("c1/mlp", BreakerLevel.MODEL, "mlp")
    assert reg.named("payments").level is BreakerLevel.STANDALONE
    assert len(reg) == 3


def test_validation_errors_open_the_model_breaker_only() -> None:
    """Three validation errors open the model's breaker; the connection keeps serving other models."""
    reg = registry(FakeClock(T0))
    for _ in range(3):
        admission = reg.admit("c1", "bad-model")
        admission.failed(ErrorKind.VALIDATION)
    refused = reg.admit("c1", "bad-model")
    assert not refused
    assert refused.rejected_by is reg.model("c1", "bad-model")
    assert refused.reason.startswith("model c1/bad-model: open until")
    assert reg.connection("c1").state is BreakerState.CLOSED
    assert reg.admit("c1", "good-model")


def test_transport_errors_open_the_connection_for_every_model() -> None:
    """Transport errors count at both levels; an open connection refuses every model."""
    reg = registry(FakeClock(T0))
    for _ in range(3):
        reg.admit("c1", "m1").failed(ErrorKind.TRANSPORT)
    refused = reg.admit("c1", "m2")
    assert not refused
    assert refused.rejected_by is reg.connection("c1")
    assert refused.retry_at == T0 + 10.0


def test_a_model_refusal_frees_the_connections_trial() -> None:
    """When a half-open connection admits a trial that the model refuses, the trial slot is released."""
    clock = FakeClock(T0)
    reg = registry(clock)
    for _ in range(3):
        reg.admit("c1", "m1").failed(ErrorKind.TRANSPORT)
    reg.model("c1", "m1").force_open("ops", "bad weights")
    clock.advance(10.0)
    assert not reg.admit("c1", "m1")  # the connection admitted a trial, the model refused
    admission = reg.admit("c1", "m2")
    assert admission
    admission.succeeded()
    assert reg.connection("c1").state is BreakerState.CLOSED


def test_a_model_is_never_locked_out_for_good() -> None:
    """Unlike the seed (3 errors, banned forever), a failing model comes back after its capped wait."""
    clock = FakeClock(T0)
    reg = registry(clock)
    for _ in range(20):
        admission = reg.admit("c1", "m")
        if admission:
            admission.failed(ErrorKind.VALIDATION)
        clock.advance(5.0)
    clock.advance(60.0)  # the cap
    admission = reg.admit("c1", "m")
    assert admission
    admission.succeeded()
    assert reg.model("c1", "m").state is BreakerState.CLOSED


def test_idle_breakers_at_rest_are_evicted_after_idle_after() -> None:
    """A closed, clean breaker unused for idle_after is forgotten; busy or failing ones are kept."""
    clock = FakeClock(T0)
    reg = registry(clock)
    reg.connection("idle").record_success()
    reg.connection("idle").checkpoint()
    reg.connection("idle").drain_events()
    reg.connection("failing").record_failure(ErrorKind.TRANSPORT)
    reg.connection("failing").drain_events()
    busy = reg.connection("busy")
    assert reg.evict_idle() == []  # first sight of each breaker
    clock.advance(30.0)
    busy.record_success()
    assert reg.evict_idle() == []  # idle for 30 s only
    clock.advance(30.0)
    busy.record_success()
    assert [b.key for b in reg.evict_idle()] == ["idle"]
    assert "idle" not in reg
    assert "failing" in reg
    assert "busy" in reg
    assert reg.connection("idle") is not None  # created again, empty


def test_eviction_keeps_breakers_with_undrained_events() -> None:
    """A breaker whose events were not yet persisted is never evicted."""
    clock = FakeClock(T0)
    reg = registry(clock)
    reg.connection("c").force_open("ops", "test")
    reg.connection("c").reset("ops", "test")
    reg.evict_idle()
    clock.advance(120.0)
    assert reg.evict_idle() == []
    reg.connection("c").drain_events()
    (evicted,) = reg.evict_idle()
    assert evicted.key == "c"
    assert [e.TYPE for e in evicted.drain_events()] == ["BreakerEvicted"]


def test_every_breaker_of_a_registry_draws_its_jitter_from_the_registry_source() -> None:
    """The registry hands its one injected source to each breaker it creates."""
    clock = FakeClock(T0)
    source = CountingSource(0.5)
    jittered = BreakerPolicy(consecutive_failures=1, backoff=OpenBackoff(base=10.0, jitter="full"))
    reg = BreakerRegistry(connection_policy=jittered, model_policy=jittered, clock=clock, rng=source)
    for breaker in (reg.connection("c1"), reg.model("c1", "m"), reg.connection("c2")):
        breaker.record_failure(ErrorKind.TRANSPORT)  # opens for base: nothing to draw
        clock.advance(10.0)
        trial = breaker.allow()
        breaker.record_failure(ErrorKind.TRANSPORT, permit=trial.permit)  # re-opens, jittered
        assert breaker.retry_at == clock() + 10.0 + 10.0 * 0.5
    assert source.draws == 3


def test_adopt_replaces_the_breaker_under_its_key() -> None:
    """A restored breaker adopted by the registry is the one handed out for its key."""
    reg = registry(FakeClock(T0))
    other = BreakerRegistry(clock=FakeClock(T0), rng=random.Random(0)).connection("c1")
    reg.adopt(other)
    assert reg.connection("c1") is other
    assert reg.get(model_key("c1", "m")) is None


def test_idle_after_must_be_positive() -> None:
    """A registry refuses a non-positive idle_after."""
    with pytest.raises(ConfigurationError):
        BreakerRegistry(idle_after=0, clock=FakeClock(), rng=random.Random(0))


def test_take_dirty_lists_each_breaker_with_events_once() -> None:
    """What a durable driver's flush reads instead of every breaker: the held breakers that
    emitted since the last call, each once; an adopted breaker with pending events is listed."""
    reg = registry(FakeClock(1_000.0))
    idle = [reg.named(f"idle-{i}") for i in range(50)]
    busy = reg.named("busy")
    for _ in range(3):
        busy.record_failure(ErrorKind.TRANSPORT)  # three events, listed once
    assert reg.take_dirty() == [busy]
    assert reg.take_dirty() == []  # taken: the events are now the driver's to drain
    busy.drain_events()
    busy.record_failure(ErrorKind.TRANSPORT)
    idle[7].force_open("ops", "maintenance")
    assert {b.key for b in reg.take_dirty()} == {"busy", "idle-7"}
    replacement = reg.named("other")
    replacement.record_failure(ErrorKind.TRANSPORT)
    reg.adopt(reg.named("other"))  # the same breaker adopted: still listed once
    assert reg.take_dirty() == [replacement]
    replacement.drain_events()
    replacement.record_failure(ErrorKind.TRANSPORT)
    replacement.drain_events()  # drained (a rebase does) before the take: nothing left to flush
    assert reg.take_dirty() == []


def test_claim_trials_reaches_breakers_held_before_and_made_after() -> None:
    """A registry asked to claim trials (as a sharing durable driver asks) turns it on for the
    breakers it already holds, those it creates and those it adopts; a claim in progress stays."""
    reg = registry(FakeClock(1_000.0))
    before = reg.named("before")
    assert before.trial_claim is TrialClaim.OFF
    reg.claim_trials(5.0)
    assert before.trial_claim is TrialClaim.NO_ROUND
    assert reg.named("after").trial_claim is TrialClaim.NO_ROUND
    adopted = CircuitBreaker("adopted", clock=reg.clock, rng=reg.rng)
    reg.adopt(adopted)
    assert adopted.trial_claim is TrialClaim.NO_ROUND
