"""The sliding windows a closed breaker judges by: the last N calls, or the last N seconds.

Each call is one code: bit 0 set for a failure, bit 1 set for a slow call. Windows keep running
totals so a rule is checked in constant time, and can add a run of identical outcomes at once
(a replay folds thousands of summarised successes without looping over each).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from poolwarden.policy import SlidingWindow

__all__ = ["FAILED", "SLOW", "CountWindow", "OutcomeWindow", "TimeWindow", "new_window", "window_from_json"]

FAILED = 1
"""Outcome bit: the call failed."""
SLOW = 2
"""Outcome bit: the call took longer than the policy's slow-call threshold."""


class CountWindow:
    """The outcomes of the last ``size`` calls, in a ring."""

    __slots__ = ("_head", "_ring", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring = bytearray(size)
        self._head = 0  # where the next outcome goes
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def add(self, code: int, count: int = 1, now: float = 0.0) -> None:
        """Add ``count`` calls with outcome ``code``; ``now`` is unused (the window counts calls)."""
        if count >= self.size:
            self._ring[:] = bytes([code]) * self.size
            self._head = 0
            self.calls = self.size
            self.failures = self.size if code & FAILED else 0
            self.slow = self.size if code & SLOW else 0
            return
        ring, size = self._ring, self.size
        for _ in range(count):
            head = self._head
            if self.calls == size:
                old = ring[head]
                self.failures -= old & FAILED
                self.slow -= old >> 1
            else:
                self.calls += 1
            ring[head] = code
            self.failures += code & FAILED
            self.slow += code >> 1
            self._head = head + 1 if head + 1 < size else 0

    def prune(self, now: float) -> None:
        """Nothing leaves a count window with time."""

    def to_json(self) -> dict[str, Any]:
        """The outcomes oldest first, as a string of digits."""
        start = (self._head - self.calls) % self.size
        codes = (self._ring[(start + i) % self.size] for i in range(self.calls))
        return {"kind": "count", "size": self.size, "codes": "".join(str(code) for code in codes)}

    def load_codes(self, codes: str) -> None:
        """Fill an empty window with ``codes`` (``to_json``'s digits, oldest first).

        At most ``size`` valid digits fill the ring in one step, which is what adding each in turn
        makes, without a call per code (a restore rebuilds a window per breaker); anything else
        is added digit by digit, so it fails as ``add`` would.
        """
        if len(codes) <= self.size and not codes.strip("0123"):
            self._ring[: len(codes)] = codes.encode("ascii").translate(_DIGIT_CODES)
            self._head = len(codes) % self.size
            self.calls = len(codes)
            self.failures = codes.count("1") + codes.count("3")
            self.slow = codes.count("2") + codes.count("3")
        else:
            for char in codes:
                self.add(int(char))


class TimeWindow:
    """Call counts in whole-second buckets, for the last ``size`` seconds."""

    __slots__ = ("_buckets", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buckets: deque[list[int]] = deque()  # [second, calls, failures, slow], oldest first
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def add(self, code: int, count: int = 1, now: float = 0.0) -> None:
        """Add ``count`` calls with outcome ``code`` at ``now``, and drop buckets that left the window."""
        if count <= 0:
            return
        second = math.floor(now)
        buckets = self._buckets
        # A wall clock can step back; such a call joins the newest bucket rather than reorder the past.
        if buckets and buckets[-1][0] >= second:
            bucket = buckets[-1]
        else:
            bucket = [second, 0, 0, 0]
            buckets.append(bucket)
        failed = count if code & FAILED else 0
        slow = count if code & SLOW else 0
        bucket[1] += count
        bucket[2] += failed
        bucket[3] += slow
        self.calls += count
        self.failures += failed
        self.slow += slow
        self.prune(now)

    def add_bucket(self, second: int, calls: int, slow: int) -> None:
        """Add a summarised bucket of successful calls (``slow`` of them slow)."""
        self.add(SLOW, slow, float(second))
        self.add(0, calls - slow, float(second))

    def prune(self, now: float) -> None:
        """Drop the buckets older than ``size`` seconds before ``now``."""
        limit = math.floor(now) - self.size
        buckets = self._buckets
        while buckets and buckets[0][0] <= limit:
            _, calls, failures, slow = buckets.popleft()
            self.calls -= calls
            self.failures -= failures
            self.slow -= slow

    def to_json(self) -> dict[str, Any]:
        """The buckets oldest first."""
        return {"kind": "time", "size": self.size, "buckets": [list(b) for b in self._buckets if b[1]]}

    def load_buckets(self, buckets: list[list[int]]) -> None:
        """Fill an empty window with ``to_json``'s buckets (``[second, calls, failures, slow]``)."""
        for second, calls, failures, slow in buckets:
            self._buckets.append([second, calls, failures, slow])
            self.calls += calls
            self.failures += failures
            self.slow += slow


OutcomeWindow = CountWindow | TimeWindow


def new_window(spec: SlidingWindow) -> OutcomeWindow:
    """An empty window of the kind and size ``spec`` asks for."""
    return CountWindow(spec.size) if spec.kind == "count" else TimeWindow(spec.size)


_DIGIT_CODES = bytes.maketrans(b"0123", bytes([0, 1, 2, 3]))
"""The outcome code of each digit ``CountWindow.to_json`` writes."""


def window_from_json(data: dict[str, Any], spec: SlidingWindow) -> OutcomeWindow:
    """Rebuild a window saved by ``to_json``; a snapshot from another window shape starts empty."""
    window = new_window(spec)
    if data.get("kind") != spec.kind or data.get("size") != spec.size:
        return window
    if isinstance(window, CountWindow):
        window.load_codes(data["codes"])
    else:
        window.load_buckets(data["buckets"])
    return window
