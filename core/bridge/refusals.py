"""How many refusals the bridge writes to the log: a burst per kind, then a count.

Anyone on this host can open sockets to the bridge and be refused, as fast as they like. Each
refusal used to append an event, so a flood of wrong hellos filled the log. :class:`RefusalLimiter`
lets ``burst`` refusals of one kind through per ``window_s`` seconds; the rest are only counted,
and the next refusal of that kind let through carries how many were held back (``suppressed``).
Every refusal is still counted in :attr:`RefusalLimiter.totals`. Pure: it is given the time.

Its tables are bounded: one window and one total per kind, and kinds past ``max_kinds`` are
counted under ``"other"`` (the bridge's kinds are a short fixed list; the cap holds whatever a
caller passes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

__all__ = ["RefusalLimiter"]


@dataclass(slots=True)
class _Window:
    started_at: float
    written: int = 0
    suppressed: int = 0


class RefusalLimiter:
    """Decides which refusals are written; see the module docstring."""

    __slots__ = ("_windows", "burst", "max_kinds", "totals", "window_s")

    OTHER = "other"
    """The kind a refusal is counted under once ``max_kinds`` kinds are known."""

    def __init__(self, *, burst: int = 5, window_s: float = 10.0, max_kinds: int = 32) -> None:
        if burst < 1 or not window_s > 0:
            raise ValueError("burst must be at least 1 and window_s positive")
        if max_kinds < 1:
            raise ValueError("max_kinds must be at least 1")
        self.burst = burst
        self.window_s = window_s
        self.max_kinds = max_kinds
        self.totals: Counter[str] = Counter()
        """Every refusal, written or not, by kind."""
        self._windows: dict[str, _Window] = {}

    def admit(self, kind: str, now: float) -> int | None:
        """Count a refusal of ``kind`` at ``now``: None if it is not to be written, else how many
        of this kind were held back before it (0 when none were)."""
        if kind not in self.totals and len(self.totals) >= self.max_kinds - 1:
            kind = self.OTHER  # one slot is kept for it, so the tables never pass max_kinds
        self.totals[kind] += 1
        window = self._windows.get(kind)
        if window is None or now - window.started_at >= self.window_s:
            held = window.suppressed if window is not None else 0
            self._windows[kind] = _Window(now, written=1)
            return held
        if window.written < self.burst:
            window.written += 1
            held, window.suppressed = window.suppressed, 0
            return held
        window.suppressed += 1
        return None
