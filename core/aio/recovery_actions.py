"""The recovery ladder's actions carried out on a real worker, through its :class:`WorkerHandle`.

:class:`HandleRecoveryActions` implements :class:`~poolwarden.aio.lifecycle_driver.RecoveryActions`:

- ``send_ping``: an application ping; a pong whose GPU says ``lost`` or ``timeout`` fails too;
- ``reload_page`` / ``crash_and_reload``: ``handle.reconnect(hung=...)``, then the models again;
- ``restart_browser``: ``handle.restart()``, then the models again;
- ``verify_round_trip``: a tiny inference checked against numpy;
- ``quarantine``: stop the handle and tell the owner, who replaces the connection.

A reload or restart loses the page's models, so the ones the owner placed on the connection
(``models``, read at each rung, since the pool moves models around) are loaded again before the
rung counts as done.
"""

# ruff: noqa: ASYNC109 -- send_ping's timeout is the lifecycle's rung deadline, passed to the page.

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from poolwarden.errors import DeadlineExceeded, ModelError, WorkerDisconnected
from poolwarden.lifecycle_types import LifecyclePolicy
from poolwarden.workers.handle import WorkerHandle, verify_round_trip

__all__ = ["HandleRecoveryActions", "ModelSource", "PlacedModel", "QuarantineCallback"]


@dataclass(frozen=True, slots=True)
class PlacedModel:
    """A model the owner placed on a connection: loaded again after a reload or restart."""

    model: str
    kind: str | None = None
    """The built-in model kind (by default the model's own name)."""
    options: Mapping[str, Any] = field(default_factory=dict)


ModelSource = Callable[[], Iterable[PlacedModel]] | Iterable[PlacedModel]
"""The models a connection had: a fixed collection, or a callable read at each rung."""

QuarantineCallback = Callable[[str], Awaitable[None] | None]
"""Called with the reason once a quarantined connection's worker is stopped."""


class HandleRecoveryActions:
    """:class:`~poolwarden.aio.lifecycle_driver.RecoveryActions` over one :class:`WorkerHandle`.

    Each primitive gets the policy's deadline for its rung, so the handle never gives up before
    the lifecycle does: it is the lifecycle's deadline (an ``AbortStep``) that ends a slow step.
    """

    def __init__(
        self,
        handle: WorkerHandle,
        *,
        policy: LifecyclePolicy,
        models: ModelSource = (),
        on_quarantine: QuarantineCallback | None = None,
    ) -> None:
        self.handle = handle
        self.policy = policy
        self._models = models
        self._on_quarantine = on_quarantine

    def placed_models(self) -> list[PlacedModel]:
        """The models to load again after the page was lost."""
        source = self._models
        return list(source() if callable(source) else source)

    async def send_ping(self, timeout: float) -> None:
        """An application ping; fails unless the JS thread answers and the GPU (if any) is alive."""
        connection = self.handle.connection
        try:
            pong = await connection.app_ping(timeout)
        except WorkerDisconnected as exc:
            # Mapped at the boundary so the failed rung is recorded as a transport fault.
            raise ConnectionError(str(exc)) from exc
        if pong.gpu == "lost":
            raise ModelError(f"worker {connection.connection_id!r}: the GPU device is lost", "device_lost")
        if pong.gpu == "timeout":
            raise DeadlineExceeded(
                f"worker {connection.connection_id!r}: the GPU did not finish a tiny submission in time"
            )

    async def reload_page(self) -> None:
        """Reload the page, wait for its hello, load its models again."""
        await self.handle.reconnect(hung=False, timeout=self.policy.reconnect_timeout_s)
        await self._load_models(self.policy.reconnect_timeout_s)

    async def crash_and_reload(self) -> None:
        """Crash the hung page, reload it, wait for its hello, load its models again."""
        await self.handle.reconnect(hung=True, timeout=self.policy.reconnect_timeout_s)
        await self._load_models(self.policy.reconnect_timeout_s)

    async def restart_browser(self) -> None:
        """Kill and relaunch the worker, wait for its hello, load its models again."""
        await self.handle.restart(timeout=self.policy.restart_timeout_s)
        await self._load_models(self.policy.restart_timeout_s)

    async def verify_round_trip(self) -> None:
        """A tiny toy-mlp inference on the connection, checked against the numpy reference."""
        await verify_round_trip(self.handle.connection, timeout=self.policy.verify_timeout_s)

    async def quarantine(self, reason: str) -> None:
        """Stop the worker, then tell the owner (who replaces the connection)."""
        await self.handle.stop()
        if self._on_quarantine is not None:
            outcome = self._on_quarantine(reason)
            if inspect.isawaitable(outcome):
                await outcome

    async def _load_models(self, timeout: float) -> None:
        connection = self.handle.connection
        for placed in self.placed_models():
            await connection.load_model(placed.model, placed.kind, placed.options, timeout=timeout)
