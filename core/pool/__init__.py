"""The resource pool: inference served by browser connections through breakers and recovery.

``ResourcePool`` and its results are imported on first use, so that the pool's pure helpers
(``poolwarden.pool.placement``, ``routing``, ``tally``, ``retry_budget``, ``results``) load no
asyncio driver, store or socket library when imported on their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poolwarden.lazy import lazy_exports

__all__ = [
    "BROWSER_PREFERENCES",
    "InferenceResult",
    "PoolConfig",
    "ResourcePool",
    "RetryPolicy",
    "WorkerFactory",
]

_EXPORTS: dict[str, str] = {
    "BROWSER_PREFERENCES": "poolwarden.pool.placement",
    "PoolConfig": "poolwarden.pool.config",
    "RetryPolicy": "poolwarden.pool.config",
    "InferenceResult": "poolwarden.pool.results",
    "ResourcePool": "poolwarden.pool.pool",
    "WorkerFactory": "poolwarden.pool.pool",
}

if TYPE_CHECKING:
    from poolwarden.pool.config import PoolConfig, RetryPolicy
    from poolwarden.pool.placement import BROWSER_PREFERENCES
    from poolwarden.pool.pool import ResourcePool, WorkerFactory
    from poolwarden.pool.results import InferenceResult


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
