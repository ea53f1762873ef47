"""Test helpers: breaker events recorded in memory as a store would number them, random traffic,
and a fixed random source."""

from __future__ import annotations

from poolwarden.bench.breaker import MemoryLog as Log
from poolwarden.bench.breaker import synthetic_traffic as simulate

__all__ = ["CountingSource", "Log", "simulate"]


class CountingSource:
    """A RandomSource that always draws ``value`` and counts its draws."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return self.value
