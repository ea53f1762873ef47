"""Shared fixtures: an injected clock and event factories."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from poolwarden.clock import FakeClock
from poolwarden.events import NewEvent


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when a test says so."""
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def make_event() -> Callable[..., NewEvent]:
    """A factory of distinct events: each call gets the next sequence number in its payload."""
    counter = itertools.count(1)

    def make(type: str = "SomethingHappened", **fields: Any) -> NewEvent:
        n = next(counter)
        payload = fields.pop("payload", {"n": n})
        occurred_at = fields.pop("occurred_at", 1_800_000_000.0 + n)
        return NewEvent(type=type, occurred_at=occurred_at, payload=payload, **fields)

    return make
