"""Where a model goes: the browser its type prefers, refined by what the log has seen, then by load.

Pure: it ranks candidates from their browser, their load and the recorded success rate and
latency of (model type, browser); the pool gathers those figures (from the log at start-up, then
as requests complete).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from poolwarden.pool.config import BROWSER_PREFERENCES

__all__ = ["BrowserStats", "Candidate", "StatsBook", "rank"]

_MIN_SAMPLES = 20  # below this, what the log says of a (type, browser) is not yet evidence


@dataclass(frozen=True, slots=True)
class Candidate:
    """A connection that could take a model."""

    connection_id: str
    browser: str
    load: int  # requests in flight plus models held


@dataclass(slots=True)
class BrowserStats:
    """What requests of one model type did on one browser."""

    requests: int = 0
    successes: int = 0
    latency_ms_total: float = 0.0

    @property
    def success_rate(self) -> float:
        """Share of requests that succeeded (1.0 with no requests yet)."""
        return self.successes / self.requests if self.requests else 1.0

    @property
    def mean_latency_ms(self) -> float:
        """Mean latency of the successful requests (0.0 with none)."""
        return self.latency_ms_total / self.successes if self.successes else 0.0


class StatsBook:
    """Success and latency by (model type, browser)."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], BrowserStats] = {}

    def record(self, model_type: str, browser: str, ok: bool, latency_ms: float | None) -> None:
        """Count one request's outcome."""
        stats = self._stats.setdefault((model_type, browser), BrowserStats())
        stats.requests += 1
        if ok:
            stats.successes += 1
            stats.latency_ms_total += latency_ms or 0.0

    def get(self, model_type: str, browser: str) -> BrowserStats | None:
        """The figures for (model type, browser), if any."""
        return self._stats.get((model_type, browser))

    def items(self) -> Iterable[tuple[tuple[str, str], BrowserStats]]:
        """Every (model type, browser) with its figures."""
        return self._stats.items()


def preference(model_type: str) -> tuple[str, ...]:
    """The browsers ``model_type`` prefers, best first (Chromium first for unknown types)."""
    return BROWSER_PREFERENCES.get(model_type, ("chromium", "firefox", "simulated"))


def rank(model_type: str, candidates: Sequence[Candidate], stats: StatsBook | None = None) -> list[Candidate]:
    """``candidates`` best first for a model of ``model_type``.

    The browser preference orders them; a browser whose recorded success rate for this type is
    clearly worse (with enough samples) drops behind; ties go to the faster browser, then to the
    least loaded connection.
    """
    order = preference(model_type)

    def key(candidate: Candidate) -> tuple[float, float, int]:
        position = order.index(candidate.browser) if candidate.browser in order else len(order)
        figures = stats.get(model_type, candidate.browser) if stats is not None else None
        if figures is not None and figures.requests >= _MIN_SAMPLES:
            # Each 10 points of failure rate cost one place in the preference order.
            penalty = (1.0 - figures.success_rate) * 10
            latency = figures.mean_latency_ms
        else:
            penalty, latency = 0.0, 0.0
        return (position + penalty, latency, candidate.load)

    return sorted(candidates, key=key)
