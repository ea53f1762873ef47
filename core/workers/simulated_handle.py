"""The simulated worker behind the same handle as a browser, for fast pools and tests.

Reconnecting it reloads it (a new instance, models lost, as a page reload does); restarting it
stops and starts it. Injected faults map onto the simulated worker's own (:class:`Fault`).
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poolwarden.workers.handle import InjectedFault
from poolwarden.workers.simulated import Fault, SimulatedWorker

if TYPE_CHECKING:
    from poolwarden.bridge.server import BridgeServer, WorkerConnection
    from poolwarden.protocol import Hello

__all__ = ["SimulatedHandle"]

_FAULTS = {
    InjectedFault.BROWSER_KILL: Fault.CRASH,
    InjectedFault.RENDERER_CRASH: Fault.CRASH,
    InjectedFault.SOCKET_DROP: Fault.DROP,
}


class SimulatedHandle:
    """A :class:`~poolwarden.workers.handle.WorkerHandle` over a :class:`SimulatedWorker`."""

    browser = "simulated"

    def __init__(self, server: BridgeServer, worker_id: str, **worker_options: Any) -> None:
        self.worker_id = worker_id
        self.server = server
        self.worker = SimulatedWorker.for_server(server, worker_id, **worker_options)

    @property
    def connection(self) -> WorkerConnection:
        """The logical connection the simulated worker attaches to."""
        return self.server.worker(self.worker_id)

    async def start(self, timeout: float | None = None) -> Hello:
        """Start the worker and wait for its hello."""
        generation = self.connection.generation
        await self.worker.start()
        return await self.connection.wait_for_hello(
            after=generation, timeout=10.0 if timeout is None else timeout
        )

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """Reload the worker (a hang ends with it, as with a crashed and reloaded page)."""
        generation = self.connection.generation
        self.connection.declare_dead("reconnect rung: reloading")  # else a hung worker keeps the id
        await self.worker.reload()
        return await self.connection.wait_for_hello(after=generation, timeout=timeout)

    async def restart(self, timeout: float | None = None) -> Hello:
        """Stop and start the worker afresh."""
        generation = self.connection.generation
        self.connection.declare_dead("restart rung: restarting")
        await self.worker.restart()
        return await self.connection.wait_for_hello(
            after=generation, timeout=10.0 if timeout is None else timeout
        )

    async def stop(self) -> None:
        """Stop the worker."""
        await self.worker.stop()

    async def pss_bytes(self) -> int | None:
        """None: a simulated worker lives in the pool's own process and has no memory of its own."""
        return None

    async def inject(self, fault: InjectedFault | str) -> None:
        """Cause ``fault`` on the simulated worker (a page hang lasts until a reload)."""
        fault = InjectedFault(fault)
        if fault is InjectedFault.PAGE_HANG:
            await self.worker.inject(Fault.HANG, seconds=600)
        elif fault is InjectedFault.DEVICE_LOST:
            await self.connection.hook("destroy_device")  # as on a browser: lost, reported, recreated
        else:
            await self.worker.inject(_FAULTS[fault])
