"""Where a model goes: the browser its type prefers, refined by what requests have shown.

Pure: :func:`browser_rank` says how good a browser is for a model type, from the type's
preference and the recorded success rate and latency of (model type, browser); the pool orders
connections by it, then by load, and feeds the figures as requests complete.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BROWSER_PREFERENCES", "BrowserStats", "StatsBook", "browser_rank", "preference"]

BROWSER_PREFERENCES: dict[str, tuple[str, ...]] = {
    # The seed's defaults: audio on Firefox (its compute shaders suit audio models), vision on
    # Chromium, text on Edge where installed (best WebNN), else Chromium.
    "audio": ("firefox", "chromium", "simulated"),
    "vision": ("chromium", "firefox", "simulated"),
    "text": ("edge", "chromium", "firefox", "simulated"),
    "text_embedding": ("edge", "chromium", "firefox", "simulated"),
    "multimodal": ("chromium", "firefox", "simulated"),
}
"""Model type -> browsers in order of preference. Unknown types take Chromium first."""

_MIN_SAMPLES = 20  # below this, what the log says of a (type, browser) is not yet evidence


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
        stats = self._stats.get((model_type, browser))
        if stats is None:
            stats = self._stats[(model_type, browser)] = BrowserStats()
        stats.requests += 1
        if ok:
            stats.successes += 1
            stats.latency_ms_total += latency_ms or 0.0

    def add(
        self, model_type: str, browser: str, successes: int, failures: int, latency_ms_total: float
    ) -> None:
        """Count many outcomes at once (what the log recorded before this process started)."""
        stats = self._stats.get((model_type, browser))
        if stats is None:
            stats = self._stats[(model_type, browser)] = BrowserStats()
        stats.requests += successes + failures
        stats.successes += successes
        stats.latency_ms_total += latency_ms_total

    def get(self, model_type: str, browser: str) -> BrowserStats | None:
        """The figures for (model type, browser), if any."""
        return self._stats.get((model_type, browser))

    def items(self) -> Iterable[tuple[tuple[str, str], BrowserStats]]:
        """Every (model type, browser) with its figures."""
        return self._stats.items()


def preference(model_type: str) -> tuple[str, ...]:
    """The browsers ``model_type`` prefers, best first (Chromium first for unknown types)."""
    return BROWSER_PREFERENCES.get(model_type, ("chromium", "firefox", "simulated"))


def browser_rank(model_type: str, browser: str, stats: StatsBook | None = None) -> tuple[float, float]:
    """How good ``browser`` is for ``model_type``, lower is better: (place, mean latency ms).

    The place is the browser's position in the type's preference, pushed back one place for each
    10 points of recorded failure rate (once there are enough samples to mean something).
    """
    order = preference(model_type)
    position = order.index(browser) if browser in order else len(order)
    figures = stats.get(model_type, browser) if stats is not None else None
    if figures is None or figures.requests < _MIN_SAMPLES:
        return float(position), 0.0
    return position + (1.0 - figures.success_rate) * 10, figures.mean_latency_ms
