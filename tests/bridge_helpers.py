"""Helpers shared by the bridge and browser tests: an event recorder one can wait on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from poolwarden.errors import BrowserNotFound
from poolwarden.events import NewEvent


def installed(find: Callable[[], str]) -> bool:
    """Whether ``find`` (find_chromium, find_firefox) finds its browser on this machine."""
    try:
        find()
    except BrowserNotFound:
        return False
    return True


class EventRecorder:
    """Collects the bridge's events and lets a test wait for one, instead of sleeping."""

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
        self,
        match: Callable[[NewEvent], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 -- a test's wait must end in a failure, never hang
        start: int = 0,
    ) -> NewEvent:
        """The first event from index ``start`` on that matches, waiting up to ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[start:]:
                    if match(event):
                        return event
                await self._changed.wait()
