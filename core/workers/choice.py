"""Which kind of worker a pool runs: the names, and ``auto``'s choice of a real browser."""

from __future__ import annotations

from typing import Literal

from poolwarden.errors import PoolwardenError

__all__ = ["WORKER_KINDS", "WorkerKind", "resolve_workers"]

WorkerKind = Literal["simulated", "chromium", "firefox"]
"""A worker the pool can start: the Python stand-in, or a real headless browser."""

WORKER_KINDS: tuple[WorkerKind, ...] = ("simulated", "chromium", "firefox")


def resolve_workers(requested: str) -> tuple[WorkerKind, str]:
    """The worker kind to use for ``requested`` (``auto`` picks real Chromium if installed) and why."""
    for kind in WORKER_KINDS:
        if requested == kind:
            return kind, f"{kind} workers, as asked"
    if requested != "auto":
        raise PoolwardenError(f"--workers must be auto, chromium, firefox or simulated, not {requested!r}")
    from poolwarden.browser.launcher import find_chromium

    try:
        path = find_chromium()
    except PoolwardenError:
        return "simulated", "no Chromium found, so simulated workers (they speak the real page's protocol)"
    return "chromium", f"real headless Chromium ({path})"
