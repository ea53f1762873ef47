"""Which connection a request goes to next: placement order, breakers, load, panic routing.

:class:`Router` answers one question, synchronously and without I/O: given the pool's members
now, where should this request (or this retry) go? Its answer is a :class:`Route`:

- a member, best first: holders of the model before connections that would have to load it;
  then the browser the model type prefers, refined by the success and latency recorded for
  (model type, browser) (:func:`~poolwarden.pool.placement.browser_rank`); then the least load.
  Connections a request already tried come last, so a retry goes elsewhere when it can;
- or no member, and why: every candidate is busy (the request waits for a slot), or breakers
  refuse every one (:class:`~poolwarden.errors.CircuitOpen`), or none serves.

Envoy's lesson is kept here too: breakers never eject the whole pool. When the share of
connections whose own breaker is open exceeds ``max_ejection_share``, a request that every
breaker refuses goes to the least bad holder (the one whose breaker reopens first) anyway, as a
panic route. A person's decision wins over that: a connection whose breaker (its own, or its
breaker for the model) an operator forced open is never a panic route, and when only such
connections are left the request fails with :class:`~poolwarden.errors.IsolatedByOperator`.
Connections the outlier detector ejected (:mod:`poolwarden.outliers`, when
``PoolConfig.outliers`` is set) rank after every other candidate: they get a request only when no
other connection can take it.

Choosing is one pass over the members with no sorting, because it is on every request's path;
the browser standings it compares change slowly and are worked out at most once a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Generic, NamedTuple, Protocol, TypeVar

from poolwarden.breaker import BreakerState, CircuitBreaker
from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.clock import Clock
from poolwarden.errors import CircuitOpen, IsolatedByOperator
from poolwarden.outliers import OutlierDetector
from poolwarden.pool.placement import StatsBook, browser_rank

__all__ = ["Routable", "Route", "Router", "blocking_breaker"]


class Routable(Protocol):
    """What routing reads of a pool member (``poolwarden.pool.member.Member`` is one)."""

    @property
    def connection_id(self) -> str: ...
    @property
    def browser(self) -> str: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def load(self) -> int: ...
    @property
    def serving(self) -> bool: ...
    @property
    def draining(self) -> bool: ...
    @property
    def models(self) -> Mapping[str, object]: ...


Member = TypeVar("Member", bound=Routable)

_NOTHING: frozenset[str] = frozenset()
_CLOSED = BreakerState.CLOSED
_FORCED_OPEN = BreakerState.FORCED_OPEN

STANDING_TTL = 1.0
"""Seconds a browser's standing for a model type is reused before it is worked out again."""


class Route(NamedTuple, Generic[Member]):
    """Where a request goes next, or why it goes nowhere yet (a named tuple: one per request)."""

    member: Member | None
    panic: bool = False
    """The member's breakers refuse it, and it is served anyway (panic routing)."""
    refusal: CircuitOpen | None = None
    """Why no member was found, when breakers are the reason."""
    busy: bool = False
    """No member now, but a busy one will free a slot: wait for it."""
    must_load: bool = False
    """The model has to be placed on the member before it can serve there."""
    breakers: tuple[CircuitBreaker, CircuitBreaker] | None = None
    """The member's connection breaker and its breaker for the model (to admit the call)."""
    returning: bool = False
    """No member now, but one is out for maintenance (draining, restarting) and will come back:
    wait for it."""


def blocking_breaker(breakers: Iterable[CircuitBreaker], now: float) -> CircuitBreaker | None:
    """The first of ``breakers`` that would refuse a call now, found without asking them (asking
    a half-open breaker would take one of its trials)."""
    for breaker in breakers:
        state = breaker.state
        if state is BreakerState.FORCED_OPEN:
            return breaker
        if state is BreakerState.OPEN and (breaker.retry_at is None or breaker.retry_at > now):
            return breaker
    return None


class Router(Generic[Member]):
    """Chooses connections for requests; see the module docstring."""

    def __init__(
        self,
        members: Mapping[str, Member],
        registry: BreakerRegistry,
        stats: StatsBook,
        max_ejection_share: float,
        *,
        clock: Clock,
        outliers: OutlierDetector | None = None,
    ) -> None:
        self.members = members
        self.outliers = outliers
        self.registry = registry
        self.stats = stats
        self.clock = clock
        self.max_ejection_share = max_ejection_share
        self._standings: dict[tuple[str, str], tuple[float, float]] = {}
        self._standings_expire = 0.0

    def standing(self, model_type: str, browser: str) -> tuple[float, float]:
        """How good ``browser`` is for ``model_type`` now (lower is better), cached briefly."""
        standings = self._standings_now(self.clock())
        return standings.get((model_type, browser)) or self._rank(model_type, browser)

    def _standings_now(self, now: float) -> dict[tuple[str, str], tuple[float, float]]:
        if now >= self._standings_expire or now < self._standings_expire - STANDING_TTL:
            self._standings.clear()
            self._standings_expire = now + STANDING_TTL
        return self._standings

    def _rank(self, model_type: str, browser: str) -> tuple[float, float]:
        standing = self._standings[(model_type, browser)] = browser_rank(model_type, browser, self.stats)
        return standing

    def ranked(self, model_type: str, members: Iterable[Member]) -> list[Member]:
        """``members`` best first for a model of ``model_type``: standing, then load."""
        return sorted(members, key=lambda m: (*self.standing(model_type, m.browser), m.load))

    def blocking(self, connection_id: str, model_id: str, now: float) -> CircuitBreaker | None:
        """The breaker (the connection's, or the model's on it) that keeps calls away now."""
        return blocking_breaker(self.registry.pair(connection_id, model_id), now)

    def open_share(self, serving: list[Member], now: float) -> float:
        """The share of ``serving`` whose own connection breaker keeps calls away."""
        if not serving:
            return 1.0
        registry = self.registry
        blocked = sum(
            1 for m in serving if blocking_breaker((registry.connection(m.connection_id),), now) is not None
        )
        return blocked / len(serving)

    def choose(
        self,
        model_id: str,
        model_type: str,
        tried: Set[str] = _NOTHING,
        skip: Set[str] = _NOTHING,
    ) -> Route[Member]:
        """The best member for the next attempt of a request for ``model_id``.

        ``tried`` are connections this request already failed on (they come last); ``skip`` are
        connections not to consider at all (their breakers refused at admission, or the model
        could not be placed there).
        """
        now = self.clock()
        standings = self._standings_now(now)
        best: Member | None = None
        best_key: tuple[bool, bool, bool, float, float, int] | None = None
        ejected = self.outliers.is_ejected if self.outliers is not None else None
        best_breakers: tuple[CircuitBreaker, CircuitBreaker] | None = None
        refusal: CircuitOpen | None = None
        isolated: list[str] = []
        others_refused = False
        busy = False
        returning = False
        pair = self.registry.pair
        for member in self.members.values():
            if not member.serving:
                returning = returning or member.draining
                continue
            connection_id = member.connection_id
            if connection_id in skip:
                continue
            in_flight = member.in_flight
            if in_flight >= member.concurrency:
                busy = True
                continue
            models = member.models
            browser = member.browser
            place, latency = standings.get((model_type, browser)) or self._rank(model_type, browser)
            key = (
                # an outlier only when nothing else can take the request
                ejected is not None and ejected(connection_id),
                connection_id in tried,
                model_id not in models,
                place,
                latency,
                in_flight + len(models),
            )
            if best_key is not None and key >= best_key:
                continue
            breakers = pair(connection_id, model_id)
            if breakers[0].state is _CLOSED and breakers[1].state is _CLOSED:
                blocked = None  # the common case, without a call
            else:
                blocked = blocking_breaker(breakers, now)
            if blocked is not None:
                if blocked.state is _FORCED_OPEN or any(b.state is _FORCED_OPEN for b in breakers):
                    isolated.append(connection_id)
                else:
                    others_refused = True
                if refusal is None:
                    refusal = CircuitOpen(blocked.key, f"breaker {blocked.state}", blocked.retry_at, now=now)
                continue
            best, best_key, best_breakers = member, key, breakers
        if best is not None:
            return Route(best, False, None, False, model_id not in best.models, best_breakers)
        if refusal is not None:
            panic = self._panic_route(model_id, skip, now)
            if panic is not None:
                return Route(panic, panic=True)
        if isolated and not others_refused:
            refusal = IsolatedByOperator(isolated)
        if busy:
            return Route(None, busy=True, refusal=refusal)
        if returning and (refusal is None or isinstance(refusal, IsolatedByOperator)):
            return Route(None, returning=True)
        return Route(None, refusal=refusal)

    def _isolated(self, connection_id: str, model_id: str) -> bool:
        """Whether a person forced open the connection's breaker or its breaker for the model."""
        return any(b.state is _FORCED_OPEN for b in self.registry.pair(connection_id, model_id))

    def _panic_route(self, model_id: str, skip: Set[str], now: float) -> Member | None:
        """The least bad holder of ``model_id`` when too much of the pool is ejected, else None."""
        serving = [m for m in self.members.values() if m.serving]
        if self.open_share(serving, now) <= self.max_ejection_share:
            return None
        candidates = [
            m
            for m in serving
            if model_id in m.models
            and m.in_flight < m.concurrency
            and m.connection_id not in skip
            and not self._isolated(m.connection_id, model_id)
        ]
        if not candidates:
            return None

        def reopens_at(member: Member) -> float:
            breaker = self.blocking(member.connection_id, model_id, now)
            if breaker is None:
                return 0.0
            return float("inf") if breaker.retry_at is None else breaker.retry_at

        return min(candidates, key=reopens_at)
