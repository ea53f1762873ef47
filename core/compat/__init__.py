"""The seed's API, for code migrating from ``resource_pool_error_recovery``.

``ResourcePoolErrorRecovery`` keeps the seed's static methods and signatures, and
``ResourcePoolBridge`` the bridge they were used with, so that the seed's "Integration Example"
(``EnhancedResourcePoolBridge``) runs with only its imports changed. Underneath is a
:class:`~poolwarden.pool.ResourcePool`: real breakers, a real recovery ladder, an event log.

Where the seed was wrong, this is right: a result that was not computed is never reported as a
success. ``run_inference`` returns ``{"success": False, "status": "error", ...}`` with the typed
error's name when no connection could serve. The seed's ``{"success": True, "status":
"simulated"}`` exists only with ``simulate_on_failure=True``, always flagged ``is_simulation:
True``, and neither breakers nor metrics ever count it as a success.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from poolwarden.classify import classify
from poolwarden.errors import CircuitOpen, PoolwardenError, RequestError
from poolwarden.lifecycle_types import Suspected
from poolwarden.policy import BreakerPolicy
from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.pool.member import PoolMember
from poolwarden.telemetry.live import build_telemetry, system_figures
from poolwarden.telemetry.queries import log_counts_sync
from poolwarden.workers.choice import WorkerKind, resolve_workers

__all__ = ["BrowserConnection", "ResourcePoolBridge", "ResourcePoolErrorRecovery"]


@dataclass(eq=False)
class BrowserConnection:
    """A connection as the seed's static methods take it: a view of one pool member."""

    pool: ResourcePool
    connection_id: str
    # Outcomes the pool already recorded in the breakers for calls made through the bridge, so
    # that the seed's update_circuit_breaker after such a call does not count it twice.
    recorded: deque[str] = field(default_factory=deque)

    @property
    def member(self) -> PoolMember | None:
        """The pool member behind this view (None once it was replaced)."""
        return self.pool.members.get(self.connection_id)

    @property
    def browser_type(self) -> str | None:
        """The browser, as the seed called it."""
        member = self.member
        return member.browser if member is not None else None

    def is_healthy(self) -> bool:
        """Whether requests are routed to this connection now."""
        member = self.member
        return member is not None and member.serving


class ResourcePoolErrorRecovery:
    """The seed's static methods, over poolwarden's breakers and recovery ladder."""

    @staticmethod
    def check_circuit_breaker(connection: BrowserConnection, model_id: str | None = None) -> tuple[bool, str]:
        """Whether a call may go to ``connection`` (and ``model_id`` on it) now, and why.

        It only looks: a half-open breaker's trial is taken by the call itself, not by this check.
        """
        pool = connection.pool
        connection_breaker = pool.registry.connection(connection.connection_id)
        breakers = [connection_breaker]
        if model_id is not None:
            breakers.append(pool.registry.model(connection.connection_id, model_id))
        blocked = pool.blocking_breaker(breakers)
        if blocked is not None:
            return False, str(
                CircuitOpen(blocked.key, str(blocked.state), blocked.retry_at, now=pool.clock())
            )
        return True, f"circuit {connection_breaker.key} is {connection_breaker.state}"

    @staticmethod
    def update_circuit_breaker(
        connection: BrowserConnection,
        success: bool,
        model_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record a call's outcome in the connection's breaker (and the model's).

        A call made through :meth:`ResourcePoolBridge.run_inference` was recorded by the pool
        already; this then only acknowledges it, so nothing is counted twice, and a simulated
        result is never counted as a success.
        """
        if model_id is not None and model_id in connection.recorded:
            connection.recorded.remove(model_id)
            return
        pool = connection.pool
        breakers = [pool.registry.connection(connection.connection_id)]
        if model_id is not None:
            breakers.append(pool.registry.model(connection.connection_id, model_id))
        kind = None if success else classify(error)  # the seed passed errors as text
        for breaker in breakers:
            if kind is None:
                breaker.record_success()
            else:
                breaker.record_failure(kind)
        if kind is not None:
            # An event whether or not the breakers count it (an input error they do not).
            pool.record_attempt_failed(connection.connection_id, model_id, kind.value)
        pool.breakers.wake()

    @staticmethod
    async def recover_connection(connection: BrowserConnection) -> tuple[bool, str]:
        """Run the recovery ladder on ``connection``: ``(True, rung)`` or ``(False, why)``.

        The rung is ``ping``, ``reconnect`` or ``restart``; ``why`` is ``quarantine`` (the
        connection was taken out of service) or ``closed``.
        """
        member = connection.member
        if member is None or member.driver is None:
            return False, "quarantine"
        return await member.driver.recover(Suspected())

    @staticmethod
    def export_telemetry(
        resource_pool: ResourcePoolBridge | ResourcePool,
        include_connections: bool = False,
        include_models: bool = False,
    ) -> dict[str, Any]:
        """The seed's telemetry dictionary, its counts read from the pool's event log.

        Synchronous, as the seed's was: it reads the log file directly, and adds what the pool
        recorded that the file does not hold yet (its successes reach the log in summaries about
        once a second; the async path flushes instead), so it counts every request answered by
        the time it is asked.
        """
        pool = resource_pool.pool if isinstance(resource_pool, ResourcePoolBridge) else resource_pool
        path = getattr(pool.store, "path", None)
        if path is None:
            raise PoolwardenError(
                "synchronous telemetry reads the log file; this pool keeps its log in memory"
            )
        system = system_figures(pool.governor.level.value)
        counts = log_counts_sync(
            path, stream=pool.streams.pool, unrecorded=pool.unrecorded, pool=pool.streams.name
        )
        return build_telemetry(pool, counts, system, include_connections, include_models)


class _ModelConnections(Mapping[str, BrowserConnection]):
    """model id -> the connection it was placed on, as the seed's ``model_connections`` was."""

    def __init__(self, bridge: ResourcePoolBridge) -> None:
        self._bridge = bridge

    def __getitem__(self, model_id: str) -> BrowserConnection:
        return self._bridge.connection(self._bridge.pool.model_connections[model_id])

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._bridge.pool.model_connections))

    def __len__(self) -> int:
        return len(self._bridge.pool.model_connections)


class ResourcePoolBridge:
    """The seed's bridge: ``initialize``, ``load_model``, ``run_inference`` (dicts), ``close``.

    :param max_connections: how many browser connections.
    :param workers: ``simulated``, ``chromium``, ``firefox`` or ``auto`` (Chromium if installed).
    :param db: the event log file.
    :param circuit_failure_threshold: consecutive failures that open a connection's breaker (the
        seed's 5).
    :param model_failure_threshold: consecutive failures that open a model's breaker on a
        connection (the seed's model-level breaker tripped after 3).
    :param circuit_reset_timeout: seconds an open breaker waits before a trial (the seed's 30).
    :param simulate_on_failure: the seed's behaviour, off by default: answer a request no
        connection could serve with ``{"success": True, "status": "simulated", "is_simulation":
        True}`` instead of an error. Never counted as a success.
    """

    def __init__(
        self,
        max_connections: int = 4,
        workers: str = "simulated",
        db: str = "poolwarden.db",
        circuit_failure_threshold: int = 5,
        circuit_reset_timeout: float = 30.0,
        model_failure_threshold: int = 3,
        simulate_on_failure: bool = False,
        **pool_options: Any,
    ) -> None:

        kind: WorkerKind = resolve_workers(workers)[0]

        def seed_policy(threshold: int) -> BreakerPolicy:
            return BreakerPolicy.from_dict(
                {
                    **BreakerPolicy().to_dict(),
                    "consecutive_failures": threshold,
                    "backoff": {**BreakerPolicy().to_dict()["backoff"], "base": circuit_reset_timeout},
                }
            )

        policy = seed_policy(circuit_failure_threshold)
        self.config = PoolConfig(
            connections=max_connections,
            workers=(kind,),
            db=db,
            connection_breaker=policy,
            model_breaker=seed_policy(model_failure_threshold),
            **pool_options,
        )
        self.simulate_on_failure = simulate_on_failure
        self.pool = ResourcePool(self.config)
        self._connections: dict[str, BrowserConnection] = {}
        self.model_connections: Mapping[str, BrowserConnection] = _ModelConnections(self)

    def connection(self, connection_id: str) -> BrowserConnection:
        """The seed-style view of a connection."""
        view = self._connections.get(connection_id)
        if view is None:
            view = self._connections[connection_id] = BrowserConnection(self.pool, connection_id)
        return view

    async def initialize(self) -> bool:
        """Start the pool; True once its connections are up."""
        await self.pool.start()
        return bool(self.pool.healthy_connections)

    async def load_model(self, model_id: str, model_type: str = "text", **options: Any) -> bool:
        """Place a built-in model (``toy-mlp``, ``matmul``) on the best connection."""
        await self.pool.load_model(model_id, model_type=model_type, options=options or None)
        return True

    async def run_inference(
        self, model_id: str, inputs: Mapping[str, Any], retry_attempts: int = 1
    ) -> dict[str, Any]:
        """Run ``model_id`` on ``inputs``; a dict with ``success`` True only for a computed result."""
        try:
            result = await self.pool.run_inference(model_id, inputs, attempts=1 + retry_attempts)
        except RequestError as error:
            for connection_id in error.attempted:
                self.connection(connection_id).recorded.append(model_id)
            failure: dict[str, Any] = {
                "success": False,
                "status": "error",
                "model_id": model_id,
                "error": str(error),
                "error_type": type(error).__name__,
                "is_simulation": False,
            }
            if isinstance(error, CircuitOpen):
                failure.update(
                    circuit_breaker_active=True, circuit_breaker_reason=error.reason, retry_at=error.retry_at
                )
            if self.simulate_on_failure:
                failure.update(success=True, status="simulated", is_simulation=True, output=None)
            return failure
        if result.connection_id is not None:
            self.connection(result.connection_id).recorded.append(model_id)
        answer = result.to_dict()
        answer["output"] = [output.tolist() for output in result.outputs]
        return answer

    async def close(self) -> None:
        """Stop the pool and flush its log."""
        await self.pool.close()
