"""The injected clock.

Everything that decides by time (breakers, the lifecycle machine, the store's ``recorded_at``)
takes a :data:`Clock`: a callable returning the current time as UTC epoch seconds. Wall time, not
a monotonic clock, because decisions such as a breaker's ``retry_at`` are persisted and must
mean the same thing to the next process that reads them.

Tests pass a :class:`FakeClock` and move it by hand; nothing ever sleeps to let time pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "FakeClock", "system_clock"]

Clock = Callable[[], float]
"""A source of the current time in UTC epoch seconds."""

system_clock: Clock = time.time
"""The real wall clock."""


class FakeClock:
    """A clock that only moves when told to.

    >>> clock = FakeClock(1000.0)
    >>> clock.advance(2.5)
    >>> clock()
    1002.5
    """

    __slots__ = ("now",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (which must not be negative)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds

    def set(self, when: float) -> None:
        """Set the clock to ``when``, which must not be earlier than now."""
        self.advance(when - self.now)
