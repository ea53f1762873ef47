"""The resource pool: inference served by browser connections through breakers and recovery."""

from poolwarden.pool.config import BROWSER_PREFERENCES, PoolConfig, RetryPolicy
from poolwarden.pool.pool import InferenceResult, ResourcePool

__all__ = ["BROWSER_PREFERENCES", "InferenceResult", "PoolConfig", "ResourcePool", "RetryPolicy"]
