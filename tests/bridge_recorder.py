"""An event sink that keeps the bridge's events and lets a caller wait for the next of a kind.

Pass it as ``BridgeServer(on_event=recorder)``. A monitor (or a test) then awaits what it needs,
a close, a device loss, instead of polling or sleeping.
"""

# ruff: noqa: ASYNC109 -- a wait must end (in DeadlineExceeded), never hang.

from __future__ import annotations

import asyncio
from collections.abc import Callable

from poolwarden.errors import DeadlineExceeded
from poolwarden.events import NewEvent

__all__ = ["SinkRecorder"]


class SinkRecorder:
    """Collects events in order; :meth:`wait_for` returns the first match from an index on."""

    def __init__(self) -> None:
        self.events: list[NewEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: NewEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = asyncio.Event()

    def of_type(self, type: str) -> list[NewEvent]:
        """The events of one type, oldest first."""
        return [e for e in self.events if e.type == type]

    async def wait_for(
        self, match: Callable[[NewEvent], bool], timeout: float = 10.0, start: int = 0
    ) -> NewEvent:
        """The first event from index ``start`` on that matches; DeadlineExceeded after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for event in self.events[start:]:
                        if match(event):
                            return event
                    await self._changed.wait()
        except TimeoutError:
            raise DeadlineExceeded(f"no matching event within {timeout} s") from None
