"""poolwarden: keeps a pool of browser-based AI accelerators serving through failure.

The names below are the public API; each is imported on first use, so ``import poolwarden`` stays
cheap (the store's SQLAlchemy, the bridge's websockets load only when asked for).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    "ErrorKind": "poolwarden.policy",
    "BreakerState": "poolwarden.breaker",
    "CircuitBreaker": "poolwarden.breaker",
    "BreakerRegistry": "poolwarden.breaker_registry",
    "DurableBreakers": "poolwarden.breaker_store",
    "circuit": "poolwarden.guard",
    "open_breakers": "poolwarden.guard",
    "what_if": "poolwarden.whatif",
    # the connection lifecycle
    "ConnectionLifecycle": "poolwarden.lifecycle",
    "ConnectionState": "poolwarden.lifecycle_types",
    "LifecyclePolicy": "poolwarden.lifecycle_types",
    "LifecycleDriver": "poolwarden.lifecycle_driver",
    # the pool, the seed's API and post-mortems
    "PoolConfig": "poolwarden.pool",
    "ResourcePool": "poolwarden.pool",
    "PoolMetrics": "poolwarden.pool.prometheus",
    "ResourcePoolBridge": "poolwarden.compat",
    "ResourcePoolErrorRecovery": "poolwarden.compat",
    "Recovery": "poolwarden.recovery",
    "load_events": "poolwarden.analysis",
    "write_report": "poolwarden.analysis",
    # memory
    "MemoryGovernor": "poolwarden.memory",
    "MemoryPolicy": "poolwarden.memory",
}

__all__ = [
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
    "FakeClock",
    "LifecycleDriver",
    "LifecyclePolicy",
    "MemoryGovernor",
    "MemoryPolicy",
    "NewEvent",
    "PoolConfig",
    "PoolMetrics",
    "PoolwardenError",
    "RecordedEvent",
    "Recovery",
    "ResourcePool",
    "ResourcePoolBridge",
    "ResourcePoolErrorRecovery",
    "__version__",
    "circuit",
    "load_events",
    "open_breakers",
    "open_store",
    "what_if",
    "write_report",
]

if TYPE_CHECKING:
    from poolwarden.analysis import load_events, write_report
    from poolwarden.breaker import BreakerState, CircuitBreaker
    from poolwarden.breaker_registry import BreakerRegistry
    from poolwarden.breaker_store import DurableBreakers
    from poolwarden.clock import FakeClock
    from poolwarden.compat import ResourcePoolBridge, ResourcePoolErrorRecovery
    from poolwarden.errors import CircuitOpen, ConcurrencyConflict, PoolwardenError
    from poolwarden.events import NewEvent, RecordedEvent
    from poolwarden.guard import circuit, open_breakers
    from poolwarden.lifecycle import ConnectionLifecycle
    from poolwarden.lifecycle_driver import LifecycleDriver
    from poolwarden.lifecycle_types import ConnectionState, LifecyclePolicy
    from poolwarden.memory import MemoryGovernor, MemoryPolicy
    from poolwarden.policy import BreakerPolicy, ErrorKind
    from poolwarden.pool import PoolConfig, ResourcePool
    from poolwarden.pool.prometheus import PoolMetrics
    from poolwarden.recovery import Recovery
    from poolwarden.storage import open_store
    from poolwarden.whatif import what_if


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'poolwarden' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
