"""The lifecycle driver's recovery actions, carried out on a real (or simulated) worker.

:class:`WorkerRecoveryActions` implements :class:`poolwarden.lifecycle_driver.RecoveryActions`
over a :class:`~poolwarden.workers.handle.WorkerHandle`: the driver decides which rung to try, this
class does it. Every action returns on success and raises on failure, with errors whose ``kind``
(or ``TimeoutError``) the driver records. Each is safe to cancel: the driver cancels a step when
its deadline passes, and a cancelled restart leaves no browser behind (the handle's ``stop``
releases whatever was started).
"""

# ruff: noqa: ASYNC109 -- send_ping's timeout is the RecoveryActions interface's own shape.

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from poolwarden.errors import DeadlineExceeded, ModelError
from poolwarden.workers.handle import verify_round_trip

if TYPE_CHECKING:
    from poolwarden.workers.handle import WorkerHandle

__all__ = ["ModelLoad", "WorkerRecoveryActions"]


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """A model to load again after the page was reloaded or the browser restarted."""

    model: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)


class WorkerRecoveryActions:
    """Ping, reload, crash-and-reload, restart, verify and quarantine one worker.

    ``models`` returns what the connection had loaded (the pool knows); those are loaded again
    after a reload or a restart, since a new page starts empty. ``on_quarantine`` is told the
    reason before the worker is stopped, so the pool can replace it.
    """

    def __init__(
        self,
        handle: WorkerHandle,
        *,
        models: Callable[[], Iterable[ModelLoad]] = tuple,
        on_quarantine: Callable[[str], Awaitable[None]] | None = None,
        hello_timeout: float = 30.0,
        verify_timeout: float = 10.0,
    ) -> None:
        self.handle = handle
        self._models = models
        self._on_quarantine = on_quarantine
        self.hello_timeout = hello_timeout
        self.verify_timeout = verify_timeout

    async def send_ping(self, timeout: float) -> None:
        """An application ping; a GPU that did not finish the page's tiny submission fails it too."""
        pong = await self.handle.connection.app_ping(timeout=timeout)
        if pong.gpu == "timeout":
            raise DeadlineExceeded(
                f"worker {self.handle.worker_id!r}: the GPU did not finish a tiny submission"
            )
        if pong.gpu == "lost":
            raise ModelError(
                f"worker {self.handle.worker_id!r}: the page has lost its GPU device", "device_lost"
            )

    async def reload_page(self) -> None:
        """Reload the page, wait for its hello, load its models again."""
        await self.handle.reconnect(hung=False, timeout=self.hello_timeout)
        await self._load_models()

    async def crash_and_reload(self) -> None:
        """Crash the hung page and reload it, wait for its hello, load its models again."""
        await self.handle.reconnect(hung=True, timeout=self.hello_timeout)
        await self._load_models()

    async def restart_browser(self) -> None:
        """Kill the browser's process group, launch it again, wait for its hello, load its models."""
        await self.handle.restart(self.hello_timeout)
        await self._load_models()

    async def verify_round_trip(self) -> None:
        """A tiny inference, checked against numpy."""
        await verify_round_trip(self.handle.connection, timeout=self.verify_timeout)

    async def quarantine(self, reason: str) -> None:
        """Tell the pool, then stop the worker and release its browser."""
        if self._on_quarantine is not None:
            await self._on_quarantine(reason)
        await self.handle.stop()

    async def _load_models(self) -> None:
        conn = self.handle.connection
        for load in self._models():
            await conn.load_model(load.model, load.kind, load.options, timeout=self.verify_timeout)
