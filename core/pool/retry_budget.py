"""The pool's retry budget (Finagle's and Envoy's lesson: retries are a share of the traffic)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["TRIM_FLOOR", "RetryBudget"]

TRIM_FLOOR = 4096
"""Requests a budget keeps noted before it trims them outside ``try_spend``."""


@dataclass(slots=True)
class RetryBudget:
    """Retries allowed over a sliding ``window`` of seconds: at most ``minimum`` plus ``ratio``
    of the requests seen in it (a retry storm cannot multiply the load on a sick pool)."""

    window: float
    requests: deque[float] = field(default_factory=deque)
    retries: deque[float] = field(default_factory=deque)
    trim_above: int = TRIM_FLOOR
    """How many noted requests set off a trim here (at most twice those of the last window)."""

    def note_request(self, now: float) -> None:
        """A request arrived at ``now`` (loop time)."""
        requests = self.requests
        requests.append(now)
        # Trimmed when spending; this only bounds the memory, so it trims when the count has
        # doubled since the last trim rather than on every request of a busy pool.
        if len(requests) > self.trim_above:
            self._trim(now)
            self.trim_above = max(TRIM_FLOOR, 2 * len(requests))

    def try_spend(self, now: float, ratio: float, minimum: int) -> bool:
        """Take one retry from the budget, if it has one left."""
        self._trim(now)
        if len(self.retries) >= minimum + ratio * len(self.requests):
            return False
        self.retries.append(now)
        return True

    def _trim(self, now: float) -> None:
        for queue in (self.requests, self.retries):
            while queue and queue[0] < now - self.window:
                queue.popleft()
