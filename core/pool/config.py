"""The settings of a resource pool, in one validated, immutable object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from poolwarden.errors import ConfigurationError
from poolwarden.lease import DEFAULT_POOL_NAME, check_pool_name
from poolwarden.lifecycle_types import LifecyclePolicy
from poolwarden.memory import MemoryPolicy
from poolwarden.outliers import OutlierPolicy
from poolwarden.policy import BreakerPolicy
from poolwarden.storage.base import Durability
from poolwarden.workers.choice import WorkerKind

__all__ = ["PoolConfig", "RetryPolicy"]


_OWNED_FLAGS = ("remote-debugging", "user-data-dir", "remote-allow-origins", "profile", "marionette")
"""Flags a caller may not pass: the pool's control channel and profile are its own."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed request is retried on another attempt.

    Only retryable kinds are retried (never ``input`` or ``validation``); each retry waits an
    exponential backoff with full jitter; and retries are capped by a budget: at most
    ``budget_ratio`` of the recent requests plus ``budget_min`` may be retries, so a sick pool is
    not flooded with retries of its own making.
    """

    attempts: int = 3
    backoff_base: float = 0.02
    backoff_cap: float = 0.5
    budget_ratio: float = 0.2
    budget_min: int = 10
    budget_window: float = 10.0
    retryable: frozenset[str] = frozenset(
        {"transport", "timeout", "process_exit", "page_crash", "device_lost", "out_of_memory", "unknown"}
    )

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_base < 0 or self.backoff_cap < self.backoff_base:
            raise ConfigurationError("retry: attempts >= 1 and 0 <= backoff_base <= backoff_cap")
        if self.budget_ratio < 0 or self.budget_min < 0 or self.budget_window <= 0:
            raise ConfigurationError("retry budget: ratio >= 0, min >= 0, window > 0")
        if self.retryable & {"input", "validation", "cancelled"}:
            raise ConfigurationError("input, validation and cancelled errors are never retried")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Everything a :class:`~poolwarden.pool.ResourcePool` is set up with.

    :param name: the pool's name (``a-z 0-9 _ -``): its streams and connection ids derive from
        it (:class:`~poolwarden.pool_streams.PoolStreams`), and while the pool runs it holds the
        lease on it in the log, so a second pool of the same name on the same log is refused
        (:class:`~poolwarden.errors.LeaseHeld`). Pools of other names share the log freely.
    :param lease_ttl: seconds the pool's lease lasts unless renewed; the pool renews it every
        third of that. A pool that died (or was stopped) is taken over by the next pool of its
        name this long after its last renewal, and the dead pool's late writes are refused.
    :param connections: how many browser connections the pool keeps.
    :param workers: the kind of each connection, cycled (``("chromium", "firefox")`` alternates).
    :param db: the event log; ``":memory:"`` keeps nothing after the process ends.
    :param max_queue: requests the pool holds (running, or waiting for a free slot on a
        connection) before it answers QueueFull.
    :param per_connection_concurrency: requests one connection runs at once; beyond it, requests
        wait in the pool's queue (within their deadlines) for a slot.
    :param default_deadline: seconds a request may take when the caller gives none.
    :param load_timeout: seconds one model load on one connection may take (a hung page's load
        fails then, is recorded as ``ModelLoadFailed`` and starts the connection's recovery).
    :param attempt_timeout: seconds one attempt on one connection may take before it is abandoned
        (the connection is suspected hung) and the request retried elsewhere.
    :param max_ejection_share: the largest share of connections whose breakers may keep requests
        away; beyond it the pool serves from the least bad connection (Envoy's panic threshold).
    :param outliers: eject a connection far worse than its peers (success rate, and optionally
        failure share or latency; :mod:`poolwarden.outliers`), at most ``max_ejection_share`` of
        them; an ejected connection gets requests only when no other can take them. ``None``
        (the default): off.
    :param heartbeat_interval: seconds between application pings to each healthy connection (each
        allowed ``lifecycle.ping_timeout_s``): only they find a page whose JavaScript is stuck.
    :param memory_interval: seconds between memory readings.
    :param recycle_after_jobs: restart a browser (after draining it) once it served this many.
    :param recycle_after_s: or once it is this old.
    :param max_out_for_maintenance: connections that maintenance (recycling by jobs, age or
        memory, a rolling restart) may take out of serving at once, counting those out for any
        other reason (recovering): a recycle that would take more waits for its turn.
    :param record_every_request: record each success as its own ``InferenceServed`` event.
        By default a success at the first attempt is summarised: one ``InferencesServed`` event
        per (connection, model, backend) for every append, with the count and every latency
        (:mod:`poolwarden.pool.tally`); retried, panic-routed and fallback results are one event
        each either way, and so is every failure.
    :param hooks: load worker pages with test hooks (fault injection) enabled.
    :param placement_history_s: how far back the log's figures of (model type, browser) are read
        when the pool starts, for placement to weigh what earlier runs saw (None: not read).
    :param metrics_port: serve Prometheus metrics (``pip install 'poolwarden[prometheus]'``) on
        this port of ``metrics_addr`` while the pool runs (0 picks a free port; None: not served).
    :param metrics_addr: the address they are served on (loopback unless said otherwise).
    :param metrics_interval: seconds between refreshes of the served figures.
    :param browser_args: extra command-line flags for every browser the pool launches (e.g.
        ``("--enable-features=WebMachineLearningNeuralNetwork",)`` to try WebNN on a Chromium that
        has it). Flags that would hand the browser to someone else or move its profile
        (``--remote-debugging-*``, ``--user-data-dir``, ``--remote-allow-origins``, ``-profile``)
        are refused: the pool owns its browsers' control channel and profile.
    :param allow_exposed_firefox_port: let Firefox workers listen for WebDriver BiDi on a loopback
        port (reconnects reload the page in ~0.3 s instead of restarting the browser in ~3 s).
        **Every local user can reach that port**, without authentication; whoever gets its one
        session (by winning the race at start-up) drives the browser, reads files as the pool's
        user and can plant an extension in the worker page (docs/bridge.md, "Firefox"): only on a
        host whose every user is trusted. Off by default: Firefox then opens no port at all.
    :param warm_spares: warm spare browsers kept per browser kind in use (0: none, the default;
        simulated workers get none). A spare is launched like a connection's browser, its page
        loaded to hello, with no models and no requests; a restart rung promotes it instead of
        launching, and another is launched in the background. Its memory is sampled with the
        browsers', and under memory pressure (WARNING or worse) it is retired and none is
        launched until the host is back to normal (docs/pool.md, "A warm spare browser").
    """

    name: str = DEFAULT_POOL_NAME
    lease_ttl: float = 10.0
    connections: int = 2
    workers: tuple[WorkerKind, ...] = ("simulated",)
    db: str | Path = "poolwarden.db"
    durability: Durability = "buffered"
    max_queue: int = 256
    per_connection_concurrency: int = 8
    default_deadline: float = 10.0
    attempt_timeout: float = 3.0
    load_timeout: float = 10.0
    max_ejection_share: float = 0.5
    outliers: OutlierPolicy | None = None
    heartbeat_interval: float = 2.0
    memory_interval: float = 2.0
    recycle_after_jobs: int | None = None
    recycle_after_s: float | None = None
    drain_timeout: float = 10.0
    max_out_for_maintenance: int = 1
    record_every_request: bool = False
    hooks: bool = False
    placement_history_s: float | None = 86_400.0
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    metrics_interval: float = 15.0
    browser_path: str | None = None
    browser_args: tuple[str, ...] = ()
    allow_exposed_firefox_port: bool = False
    warm_spares: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connection_breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    model_breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    # A ping that takes a second is as good as lost for a page that answers in milliseconds.
    lifecycle: LifecyclePolicy = field(default_factory=lambda: LifecyclePolicy(ping_timeout_s=1.0))
    memory: MemoryPolicy = field(default_factory=MemoryPolicy)

    def __post_init__(self) -> None:
        check_pool_name(self.name)
        if not self.lease_ttl > 0:
            raise ConfigurationError(f"lease_ttl must be > 0 seconds, not {self.lease_ttl}")
        if self.connections < 1:
            raise ConfigurationError("a pool needs at least one connection")
        if not self.workers or any(w not in ("simulated", "chromium", "firefox") for w in self.workers):
            raise ConfigurationError(f"workers must be simulated, chromium or firefox, not {self.workers!r}")
        for arg in self.browser_args:
            if not isinstance(arg, str) or not arg.startswith("-"):
                raise ConfigurationError(f"browser_args must be command-line flags, not {arg!r}")
            if arg.split("=", 1)[0].lstrip("-").startswith(_OWNED_FLAGS):
                raise ConfigurationError(
                    f"browser flag {arg!r} is the pool's own (its control channel or profile)"
                )
        if self.warm_spares < 0:
            raise ConfigurationError(f"warm_spares must be >= 0, not {self.warm_spares}")
        if self.max_out_for_maintenance < 1:
            raise ConfigurationError("max_out_for_maintenance must be at least 1")
        if self.max_queue < 1 or self.per_connection_concurrency < 1:
            raise ConfigurationError("max_queue and per_connection_concurrency must be at least 1")
        if self.placement_history_s is not None and not self.placement_history_s > 0:
            raise ConfigurationError("placement_history_s must be positive (seconds), or None")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigurationError(f"metrics_port must be a TCP port (0: any), not {self.metrics_port}")
        if not 0 < self.max_ejection_share <= 1:
            raise ConfigurationError("max_ejection_share must be in (0, 1]")
        if (
            self.attempt_timeout <= 0
            or self.load_timeout <= 0
            or self.default_deadline <= 0
            or self.heartbeat_interval <= 0
            or self.memory_interval <= 0
            or self.metrics_interval <= 0
        ):
            raise ConfigurationError("deadlines and intervals must be positive")

    def worker_kind(self, index: int) -> WorkerKind:
        """The kind of the ``index``-th connection."""
        return self.workers[index % len(self.workers)]
