"""poolwarden: keeps a pool of browser-based AI accelerators serving through failure.

The names below are the public API; each is imported on first use, so ``import poolwarden`` stays
cheap (the store's SQLAlchemy, the bridge's websockets load only when asked for).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poolwarden.lazy import lazy_exports

__version__ = "0.1.0.dev0"

_EXPORTS: dict[str, str] = {
    # errors and the clock
    "PoolwardenError": "poolwarden.errors",
    "CircuitOpen": "poolwarden.errors",
    "ConcurrencyConflict": "poolwarden.errors",
    "FakeClock": "poolwarden.clock",
    # events and the store
    "NewEvent": "poolwarden.events",
    "RecordedEvent": "poolwarden.events",
    "open_store": "poolwarden.storage",
    # breakers
    "BreakerPolicy": "poolwarden.policy",
    "BreakerLevel": "poolwarden.policy",
    "ErrorKind": "poolwarden.policy",
    "FailureBurst": "poolwarden.policy",
    "HalfOpenRule": "poolwarden.policy",
    "OpenBackoff": "poolwarden.policy",
    "SlidingWindow": "poolwarden.policy",
    "BreakerState": "poolwarden.breaker",
    "CircuitBreaker": "poolwarden.breaker",
    "BreakerRegistry": "poolwarden.breaker_registry",
    "DurableBreakers": "poolwarden.aio.durable_breakers",
    "circuit": "poolwarden.aio.guard",
    "open_breakers": "poolwarden.aio.guard",
    "what_if": "poolwarden.whatif",
    # the connection lifecycle
    "ConnectionLifecycle": "poolwarden.lifecycle",
    "ConnectionState": "poolwarden.lifecycle_types",
    "LifecyclePolicy": "poolwarden.lifecycle_types",
    "LifecycleDriver": "poolwarden.aio.lifecycle_driver",
    # the pool, the seed's API and post-mortems
    "PoolConfig": "poolwarden.pool",
    "ResourcePool": "poolwarden.pool",
    "PoolMetrics": "poolwarden.telemetry.prometheus",
    "ResourcePoolBridge": "poolwarden.compat",
    "ResourcePoolErrorRecovery": "poolwarden.compat",
    "Recovery": "poolwarden.aio.recovery",
    "load_events": "poolwarden.analysis",
    "write_report": "poolwarden.analysis",
    "OutlierPolicy": "poolwarden.outliers",
    # memory
    "MemoryGovernor": "poolwarden.memory",
    "MemoryPolicy": "poolwarden.memory",
}

__all__ = [
    "BreakerLevel",
    "BreakerPolicy",
    "BreakerRegistry",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "ConcurrencyConflict",
    "ConnectionLifecycle",
    "ConnectionState",
    "DurableBreakers",
    "ErrorKind",
    "FailureBurst",
    "FakeClock",
    "HalfOpenRule",
    "LifecycleDriver",
    "LifecyclePolicy",
    "MemoryGovernor",
    "MemoryPolicy",
    "NewEvent",
    "OpenBackoff",
    "OutlierPolicy",
    "PoolConfig",
    "PoolMetrics",
    "PoolwardenError",
    "RecordedEvent",
    "Recovery",
    "ResourcePool",
    "ResourcePoolBridge",
    "ResourcePoolErrorRecovery",
    "SlidingWindow",
    "__version__",
    "circuit",
    "load_events",
    "open_breakers",
    "open_store",
    "what_if",
    "write_report",
]

if TYPE_CHECKING:
    from poolwarden.aio.durable_breakers import DurableBreakers
    from poolwarden.aio.guard import circuit, open_breakers
    from poolwarden.aio.lifecycle_driver import LifecycleDriver
    from poolwarden.aio.recovery import Recovery
    from poolwarden.analysis import load_events, write_report
    from poolwarden.breaker import BreakerState, CircuitBreaker
    from poolwarden.breaker_registry import BreakerRegistry
    from poolwarden.clock import FakeClock
    from poolwarden.compat import ResourcePoolBridge, ResourcePoolErrorRecovery
    from poolwarden.errors import CircuitOpen, ConcurrencyConflict, PoolwardenError
    from poolwarden.events import NewEvent, RecordedEvent
    from poolwarden.lifecycle import ConnectionLifecycle
    from poolwarden.lifecycle_types import ConnectionState, LifecyclePolicy
    from poolwarden.memory import MemoryGovernor, MemoryPolicy
    from poolwarden.outliers import OutlierPolicy
    from poolwarden.policy import (
        BreakerLevel,
        BreakerPolicy,
        ErrorKind,
        FailureBurst,
        HalfOpenRule,
        OpenBackoff,
        SlidingWindow,
    )
    from poolwarden.pool import PoolConfig, ResourcePool
    from poolwarden.storage import open_store
    from poolwarden.telemetry.prometheus import PoolMetrics
    from poolwarden.whatif import what_if


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
