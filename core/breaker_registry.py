"""Breakers by key, created on first use and forgotten when idle and at rest.

Two levels guard the pool: one breaker per connection (key ``<connection>``) and one per model on
a connection (key ``<connection>/<model>``). :meth:`BreakerRegistry.admit` asks both and returns
an :class:`Admission` that reports the call's result to both, each counting only what its level
counts (a ``validation`` error is the model's fault, not the connection's).

A model breaker never locks a model out for good: it is an ordinary breaker whose wait is
capped by its policy's backoff, so it always comes back to a half-open trial.

Eviction forgets only breakers *at rest* (closed, nothing pending, no failure in any window)
that saw no call for ``idle_after`` seconds. Each emits ``BreakerEvicted`` first, so that a
replay of its stream ends exactly as the new breaker created for the key starts: empty windows
(the successes in them are forgotten) and no re-open streak (keep ``idle_after`` at least the
backoff's ``decay_after`` and that streak would have been forgotten anyway).
"""

from __future__ import annotations

from collections.abc import Iterator

from poolwarden.breaker import CircuitBreaker, Decision, TrialClaim
from poolwarden.clock import Clock
from poolwarden.errors import ConfigurationError
from poolwarden.policy import BreakerLevel, BreakerPolicy, ErrorKind, RandomSource

__all__ = ["Admission", "BreakerRegistry", "model_key"]


def model_key(connection_id: str, model_id: str) -> str:
    """The key of the breaker guarding ``model_id`` on ``connection_id``."""
    return f"{connection_id}/{model_id}"


class Admission:
    """The verdict of both levels for one call; report its result here, once."""

    __slots__ = ("_connection", "_model", "connection_decision", "model_decision")

    def __init__(
        self,
        connection: CircuitBreaker,
        model: CircuitBreaker,
        connection_decision: Decision,
        model_decision: Decision | None,
    ) -> None:
        self._connection = connection
        self._model = model
        self.connection_decision = connection_decision
        self.model_decision = model_decision

    @property
    def allowed(self) -> bool:
        """Whether both breakers admitted the call."""
        model = self.model_decision  # read as fields: asked for every call a pool makes
        return model is not None and model.allowed and self.connection_decision.allowed

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def rejected_by(self) -> CircuitBreaker | None:
        """The breaker that refused the call, or ``None`` if it was admitted."""
        if not self.connection_decision:
            return self._connection
        if not self.model_decision:
            return self._model
        return None

    @property
    def reason(self) -> str:
        """Why the call was refused (or the admitting reason of the connection breaker)."""
        if not self.connection_decision or self.model_decision is None:
            return f"connection {self._connection.key}: {self.connection_decision.reason}"
        if not self.model_decision:
            return f"model {self._model.key}: {self.model_decision.reason}"
        return self.connection_decision.reason

    @property
    def retry_at(self) -> float | None:
        """When the refusing breaker may admit calls again."""
        refused = self.connection_decision if not self.connection_decision else self.model_decision
        return None if refused is None else refused.retry_at

    def succeeded(self, duration: float | None = None) -> None:
        """The admitted call succeeded."""
        assert self.model_decision is not None, "a rejected call has no result to report"
        self._connection.record_success(self.connection_decision.permit, duration)
        self._model.record_success(self.model_decision.permit, duration)

    def failed(self, kind: ErrorKind, duration: float | None = None) -> None:
        """The admitted call failed with ``kind``; each level counts it as its policy says."""
        assert self.model_decision is not None, "a rejected call has no result to report"
        self._connection.record_failure(kind, duration, self.connection_decision.permit)
        self._model.record_failure(kind, duration, self.model_decision.permit)


class BreakerRegistry:
    """The breakers of a pool (or of any set of names), created lazily by key."""

    def __init__(
        self,
        *,
        connection_policy: BreakerPolicy | None = None,
        model_policy: BreakerPolicy | None = None,
        named_policy: BreakerPolicy | None = None,
        clock: Clock,
        rng: RandomSource,
        idle_after: float = 600.0,
    ) -> None:
        if not idle_after > 0:
            raise ConfigurationError("idle_after must be > 0 seconds")
        self._policies = {
            BreakerLevel.CONNECTION: connection_policy if connection_policy is not None else BreakerPolicy(),
            BreakerLevel.MODEL: model_policy if model_policy is not None else BreakerPolicy(),
            BreakerLevel.STANDALONE: named_policy if named_policy is not None else BreakerPolicy(),
        }
        self.clock = clock
        self.rng = rng
        self.idle_after = idle_after
        self.trial_claim_timeout: float | None = None
        """When set (:meth:`claim_trials`), every breaker held here claims its half-open rounds."""
        self._dirty: list[CircuitBreaker] = []
        self._breakers: dict[str, CircuitBreaker] = {}
        self._seen: dict[str, tuple[tuple[int, int, int], float]] = {}
        self._pairs: dict[tuple[str, str], tuple[CircuitBreaker, CircuitBreaker]] = {}

    def policy_for(self, key: str, level: BreakerLevel) -> BreakerPolicy:
        """The policy a breaker of ``level`` gets (the key is there for subclasses that vary it)."""
        return self._policies[level]

    def connection(self, connection_id: str) -> CircuitBreaker:
        """The breaker of a connection, created on first use."""
        return self._get(connection_id, BreakerLevel.CONNECTION, connection_id, None)

    def model(self, connection_id: str, model_id: str) -> CircuitBreaker:
        """The breaker of a model on a connection, created on first use."""
        return self._get(model_key(connection_id, model_id), BreakerLevel.MODEL, connection_id, model_id)

    def named(self, name: str) -> CircuitBreaker:
        """A standalone breaker for any name (an HTTP API, a database), created on first use."""
        return self._get(name, BreakerLevel.STANDALONE, None, None)

    def admit(self, connection_id: str, model_id: str) -> Admission:
        """Ask the connection's breaker, then the model's; a model refusal frees the connection's trial."""
        return self.admit_pair(self.connection(connection_id), self.model(connection_id, model_id))

    def pair(self, connection_id: str, model_id: str) -> tuple[CircuitBreaker, CircuitBreaker]:
        """The connection's breaker and the model's on it (created on first use).

        Asked for every request a pool routes, so the pairs are kept (and forgotten whenever a
        breaker is adopted or evicted, which replaces what a key maps to).
        """
        pair = self._pairs.get((connection_id, model_id))
        if pair is None:
            pair = self._pairs[(connection_id, model_id)] = (
                self.connection(connection_id),
                self.model(connection_id, model_id),
            )
        return pair

    @staticmethod
    def admit_pair(connection: CircuitBreaker, model: CircuitBreaker) -> Admission:
        """:meth:`admit` for breakers already at hand (from :meth:`pair`)."""
        first = connection.allow()
        if not first:
            return Admission(connection, model, first, None)
        second = model.allow()
        if not second:
            # The connection may have spent a half-open trial on a call that will not run.
            connection.record_failure(ErrorKind.CANCELLED, None, first.permit)
        return Admission(connection, model, first, second)

    def adopt(self, breaker: CircuitBreaker) -> None:
        """Hold ``breaker`` (a restored one) under its key, replacing any breaker there."""
        self._claiming(breaker)
        breaker.report_to(self._dirty)
        self._breakers[breaker.key] = breaker
        self._seen.pop(breaker.key, None)
        self._pairs.clear()

    def claim_trials(self, timeout: float) -> None:
        """Have every breaker held here, and every one created or adopted later, claim its
        half-open rounds through the log (:meth:`CircuitBreaker.claim_trials`): what a durable
        driver sharing the breakers with other processes asks."""
        self.trial_claim_timeout = timeout
        for breaker in self._breakers.values():
            self._claiming(breaker)

    def _claiming(self, breaker: CircuitBreaker) -> None:
        # A breaker already claiming keeps its claim (a rebase's replayed one may hold ours).
        if self.trial_claim_timeout is not None and breaker.trial_claim is TrialClaim.OFF:
            breaker.claim_trials(self.trial_claim_timeout)

    def take_dirty(self) -> list[CircuitBreaker]:
        """The breakers held here that emitted events since the last call, each once (a driver's
        flush reads these rather than every breaker)."""
        dirty, self._dirty[:] = list(self._dirty), []
        held = self._breakers
        return list({id(b): b for b in dirty if held.get(b.key) is b and b.has_events}.values())

    def get(self, key: str) -> CircuitBreaker | None:
        """The breaker held under ``key``, without creating one."""
        return self._breakers.get(key)

    def evict_idle(self) -> list[CircuitBreaker]:
        """Forget breakers at rest that saw no call for ``idle_after`` seconds; returns them.

        Each returned breaker holds its ``BreakerEvicted`` event for the driver to persist.
        Idleness is noticed between calls of this method, so call it periodically.
        """
        now = self.clock()
        evicted = []
        for key, breaker in list(self._breakers.items()):
            activity = breaker.activity
            seen = self._seen.get(key)
            if seen is None or seen[0] != activity:
                self._seen[key] = (activity, now)
            elif now - seen[1] >= self.idle_after and breaker.at_rest:
                breaker.evict()
                del self._breakers[key]
                del self._seen[key]
                evicted.append(breaker)
        if evicted:
            self._pairs.clear()
        return evicted

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def _get(
        self, key: str, level: BreakerLevel, connection_id: str | None, model_id: str | None
    ) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                key,
                self.policy_for(key, level),
                clock=self.clock,
                rng=self.rng,
                level=level,
                connection_id=connection_id,
                model_id=model_id,
            )
            self._claiming(breaker)
            breaker.report_to(self._dirty)
            self._breakers[key] = breaker
        return breaker
