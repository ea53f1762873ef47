"""The router on its own: which member a request goes to, driven by an injected clock."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.clock import FakeClock
from poolwarden.errors import IsolatedByOperator
from poolwarden.lifecycle_types import ConnectionState
from poolwarden.outliers import OutlierDetector, OutlierPolicy
from poolwarden.policy import BreakerPolicy, ErrorKind
from poolwarden.pool.member import ModelSlot, PoolMember
from poolwarden.pool.placement import StatsBook
from poolwarden.pool.routing import STANDING_TTL, Router


def _member(
    connection_id: str, browser: str, clock: FakeClock, *models: str, state: Any = None
) -> PoolMember:
    handle = SimpleNamespace(browser=browser)
    member = PoolMember(connection_id, browser, handle, concurrency=2, clock=clock)  # type: ignore[arg-type]
    machine = SimpleNamespace(state=state or ConnectionState.HEALTHY)
    member.recovery = SimpleNamespace(started=True, driver=SimpleNamespace(machine=machine))  # type: ignore[assignment]
    for model_id in models:
        member.models[model_id] = ModelSlot(model_id, model_id, {}, last_used_at=clock())
    return member


class Pool:
    """Members, breakers and figures as a pool holds them, around one router."""

    def __init__(self, *members: tuple[str, str, tuple[str, ...]], max_ejection_share: float = 0.5) -> None:
        self.clock = FakeClock(1_800_000_000.0)
        self.registry = BreakerRegistry(
            connection_policy=BreakerPolicy(consecutive_failures=1), clock=self.clock, rng=random.Random(0)
        )
        self.stats = StatsBook()
        self.members = {cid: _member(cid, browser, self.clock, *models) for cid, browser, models in members}
        self.router = Router(self.members, self.registry, self.stats, max_ejection_share, clock=self.clock)

    def choose(self, model_id: str = "m", model_type: str = "vision", **sets: set[str]) -> Any:
        route = self.router.choose(model_id, model_type, **sets)
        return None if route.member is None else route.member.connection_id


def test_holders_come_first_then_the_preferred_browser_then_the_least_load() -> None:
    """A holder beats a non-holder; among holders the type's browser wins; then the lighter one."""
    pool = Pool(("a", "firefox", ("m",)), ("b", "chromium", ()), ("c", "chromium", ("m",)))
    assert pool.choose() == "c"  # vision prefers Chromium, and c holds the model
    pool.members["c"].in_flight = 1
    pool.members["a"].models.clear()
    assert pool.choose() == "c"  # the only holder, busy with one of its two slots
    pool.members["b"].models["m"] = ModelSlot("m", "m", {}, last_used_at=0.0)
    assert pool.choose() == "b"  # two Chromium holders: the one with less load


def test_tried_connections_come_last_and_skipped_ones_not_at_all() -> None:
    """A retry goes elsewhere when it can; a skipped connection is never chosen."""
    pool = Pool(("a", "chromium", ("m",)), ("b", "chromium", ("m",)))
    assert pool.choose() == "a"
    assert pool.choose(tried={"a"}) == "b"
    assert pool.choose(tried={"a", "b"}) == "a"
    assert pool.choose(skip={"a", "b"}) is None


def test_a_full_member_is_busy_and_a_recovering_one_is_not_a_candidate() -> None:
    """With every slot taken the route says busy (wait); a member not HEALTHY is passed over."""
    pool = Pool(("a", "chromium", ("m",)), ("b", "chromium", ("m",)))
    pool.members["a"].in_flight = 2
    pool.members["b"].recovery.driver.machine.state = ConnectionState.RECONNECTING  # type: ignore[union-attr]
    route = pool.router.choose("m", "vision")
    assert (route.member, route.busy, route.refusal) == (None, True, None)
    pool.members["a"].draining = True
    route = pool.router.choose("m", "vision")
    assert route.busy is False  # nothing serving: no slot to wait for
    assert route.returning is True  # but a draining member comes back: wait for it


def test_an_open_breaker_is_skipped_and_reported_with_its_retry_at() -> None:
    """A member behind an open breaker is skipped; with none left the refusal says when to retry."""
    pool = Pool(("a", "chromium", ("m",)), ("b", "chromium", ("m",)), max_ejection_share=1.0)
    pool.registry.connection("a").force_open("test", "sick")
    assert pool.choose() == "b"
    model_breaker = pool.registry.model("b", "m")
    model_breaker.force_open("test", "model broken here")
    route = pool.router.choose("m", "vision")
    assert route.member is None
    assert isinstance(route.refusal, IsolatedByOperator)  # both by hand: a person's decision
    assert route.refusal.connections == ("a", "b")


def test_isolated_connections_are_never_panic_routes() -> None:
    """Beyond max_ejection_share, a breaker forced open by a person is still no panic route; a
    tripped one is."""
    pool = Pool(("a", "chromium", ("m",)), ("b", "chromium", ("m",)), max_ejection_share=0.5)
    pool.registry.connection("a").force_open("ops", "isolate")
    breaker = pool.registry.connection("b")
    breaker.record_failure(ErrorKind.TRANSPORT, 0.01, breaker.allow().permit)
    route = pool.router.choose("m", "vision")
    assert route.panic
    assert route.member is not None
    assert route.member.connection_id == "b"
    pool.registry.model("b", "m").force_open("ops", "isolate the model here")
    route = pool.router.choose("m", "vision")
    assert route.member is None
    assert isinstance(route.refusal, IsolatedByOperator)


def test_too_much_ejected_means_a_panic_route_to_the_holder_that_reopens_first() -> None:
    """Beyond max_ejection_share open, a refused request goes to the least bad holder anyway."""
    pool = Pool(("a", "chromium", ("m",)), ("b", "chromium", ("m",)), max_ejection_share=0.5)
    for connection_id in ("a", "b"):
        breaker = pool.registry.connection(connection_id)
        breaker.record_failure(ErrorKind.TRANSPORT, 0.01, breaker.allow().permit)
        pool.clock.advance(5.0)  # b opens later, so it reopens later
    route = pool.router.choose("m", "vision")
    assert route.panic
    assert route.member is not None
    assert route.member.connection_id == "a"


def test_a_browser_that_fails_drops_behind_once_its_standing_is_worked_out_again() -> None:
    """Recorded failures push a browser back, after the cached standings expire (by the clock)."""
    pool = Pool(("a", "chromium", ("m",)), ("b", "firefox", ("m",)))
    assert pool.choose() == "a"
    for _ in range(30):
        pool.stats.record("vision", "chromium", False, None)
    assert pool.choose() == "a"  # the standings are cached for a while
    pool.clock.advance(STANDING_TTL + 0.1)
    assert pool.choose() == "b"


@pytest.mark.parametrize(
    "state", [ConnectionState.STARTING, ConnectionState.DRAINING, ConnectionState.FAILED]
)
def test_only_healthy_members_serve(state: ConnectionState) -> None:
    """Members in any state but HEALTHY get no requests."""
    pool = Pool(("a", "chromium", ("m",)))
    pool.members["a"].recovery.driver.machine.state = state  # type: ignore[union-attr]
    assert pool.choose() is None


def test_an_ejected_outlier_ranks_after_every_other_candidate() -> None:
    """A connection the outlier detector ejected gets a request only when nothing else can take it."""
    pool = Pool(("a", "chromium", ("m",)), ("b", "firefox", ()))
    policy = OutlierPolicy(
        interval=1.0,
        success_rate_stdev_factor=None,
        failure_percentage_threshold=0.5,
        failure_percentage_min_hosts=2,
        failure_percentage_request_volume=5,
    )
    detector = OutlierDetector(policy, clock=pool.clock, max_share=0.5)
    pool.router.outliers = detector
    for _ in range(5):
        detector.record("a", False)
        detector.record("b", True)
    assert pool.choose() == "a"
    pool.clock.advance(1.0)
    detector.evaluate(2)
    assert detector.is_ejected("a")
    assert pool.choose() == "b"  # a holds the model and runs the preferred browser, but is ejected
    pool.members["b"].in_flight = 2
    assert pool.choose() == "a"  # b is full: the outlier rather than a wait
