"""The pool's retry budget (Finagle's and Envoy's lesson: retries are a share of the traffic)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["RetryBudget"]


@dataclass(slots=True)
class RetryBudget:
    """Retries allowed over a sliding ``window`` of seconds: at most ``minimum`` plus ``ratio``
    of the requests seen in it (a retry storm cannot multiply the load on a sick pool)."""

    window: float
    requests: deque[float] = field(default_factory=deque)
    retries: deque[float] = field(default_factory=deque)

    def note_request(self, now: float) -> None:
        """A request arrived at ``now`` (loop time)."""
        self.requests.append(now)
        if len(self.requests) > 4096:  # trimmed when spending; this only bounds the memory
            self._trim(now)

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
