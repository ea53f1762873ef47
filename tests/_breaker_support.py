"""Test helpers: breaker events recorded in memory as a store would number them, and random traffic."""

from __future__ import annotations

from poolwarden.bench.breaker import MemoryLog as Log
from poolwarden.bench.breaker import synthetic_traffic as simulate

__all__ = ["Log", "simulate"]
