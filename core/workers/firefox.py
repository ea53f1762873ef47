"""A Firefox worker: one headless Firefox, its worker page, and a WebDriver BiDi session.

:class:`FirefoxWorker` implements :class:`~poolwarden.workers.handle.WorkerHandle`. Firefox has no
way to crash a hung page from outside (no ``Page.crash``), so ``reconnect(hung=True)`` restarts
the browser; a page that is merely disconnected is reloaded over BiDi.
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from typing import TYPE_CHECKING

from poolwarden.browser.bidi import BiDi
from poolwarden.browser.launcher import BrowserProcess, launch_firefox
from poolwarden.errors import BrowserError
from poolwarden.workers.handle import InjectedFault

if TYPE_CHECKING:
    from poolwarden.bridge.protocol import Hello
    from poolwarden.bridge.server import BridgeServer, WorkerConnection

__all__ = ["FirefoxWorker"]


class FirefoxWorker:
    """A worker page in its own headless Firefox, launched by and attached to ``server``."""

    browser = "firefox"

    def __init__(
        self,
        server: BridgeServer,
        worker_id: str,
        *,
        executable: str | None = None,
        webgpu: bool = True,
        hooks: bool = False,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.worker_id = worker_id
        self.server = server
        self.executable = executable
        self.webgpu = webgpu
        self.hooks = hooks
        self.extra_args = tuple(extra_args)
        self.process: BrowserProcess | None = None
        self.bidi: BiDi | None = None

    @property
    def connection(self) -> WorkerConnection:
        """The logical connection this worker's page attaches to."""
        return self.server.worker(self.worker_id)

    async def start(self, timeout: float = 30.0) -> Hello:
        """Launch Firefox on the worker page, wait for its hello, open a BiDi session."""
        generation = self.connection.generation
        self.process = await launch_firefox(
            self.server.page_url(self.worker_id, hooks=self.hooks),
            executable=self.executable,
            webgpu=self.webgpu,
            extra_args=self.extra_args,
            timeout=timeout,
        )
        hello = await self.connection.wait_for_hello(after=generation, timeout=timeout)
        self.bidi = BiDi(self.process.devtools_url)
        await self.bidi.open()
        await self.bidi.start_session()
        return hello

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """Reload the page over BiDi; a hung page cannot be reloaded, so it is restarted instead."""
        if hung:
            return await self.restart(timeout=max(timeout, 30.0))
        if self.bidi is None:
            raise BrowserError(f"worker {self.worker_id!r} has no BiDi session (not started?)")
        generation = self.connection.generation
        await self.bidi.reload(f"worker={self.worker_id}", timeout=timeout)
        return await self.connection.wait_for_hello(after=generation, timeout=timeout)

    async def restart(self, timeout: float = 30.0) -> Hello:
        """Kill the browser's whole process group, launch a fresh one, and wait for its hello."""
        await self.stop()
        return await self.start(timeout)

    async def stop(self) -> None:
        """Close the BiDi session and kill the browser (idempotent)."""
        bidi, self.bidi = self.bidi, None
        process, self.process = self.process, None
        if bidi is not None:
            await bidi.close()
        if process is not None:
            await process.kill()

    async def inject(self, fault: InjectedFault | str) -> None:
        """Cause ``fault``: kill the group or the tab's process, hang the page, drop the socket."""
        fault = InjectedFault(fault)
        if fault is InjectedFault.SOCKET_DROP:
            await self.connection.drop()
        elif fault is InjectedFault.PAGE_HANG:
            await self.connection.hook("hang", seconds=600)
        elif fault is InjectedFault.DEVICE_LOST:
            await self.connection.hook("destroy_device")
        elif self.process is None:
            raise BrowserError(f"worker {self.worker_id!r} has no browser to {fault.value}")
        elif fault is InjectedFault.BROWSER_KILL:
            with contextlib.suppress(ProcessLookupError):  # already dead is as good
                os.killpg(self.process.pid, signal.SIGKILL)
        else:
            for pid in await self.process.renderer_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
