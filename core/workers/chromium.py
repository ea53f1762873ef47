"""A Chromium worker: one headless browser, its worker page, and a DevTools session to recover it.

:class:`ChromiumWorker` implements :class:`~poolwarden.workers.handle.WorkerHandle`. It keeps a
DevTools session attached to its page from the first hello on, because only a session set up while
the page was healthy can still crash it once it hangs.
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from typing import TYPE_CHECKING

from poolwarden.browser.cdp import DevTools
from poolwarden.browser.launcher import BrowserProcess, launch_chromium
from poolwarden.errors import BrowserError
from poolwarden.workers.handle import InjectedFault

if TYPE_CHECKING:
    from poolwarden.bridge.protocol import Hello
    from poolwarden.bridge.server import BridgeServer, WorkerConnection

__all__ = ["ChromiumWorker"]


class ChromiumWorker:
    """A worker page in its own headless Chromium, launched by and attached to ``server``."""

    browser = "chromium"

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
        self.devtools: DevTools | None = None

    @property
    def connection(self) -> WorkerConnection:
        """The logical connection this worker's page attaches to."""
        return self.server.worker(self.worker_id)

    async def start(self, timeout: float = 20.0) -> Hello:
        """Launch Chromium on the worker page, wait for its hello, attach DevTools to the page."""
        generation = self.connection.generation
        self.process = await launch_chromium(
            self.server.page_url(self.worker_id, hooks=self.hooks),
            executable=self.executable,
            webgpu=self.webgpu,
            extra_args=self.extra_args,
            timeout=timeout,
        )
        hello = await self.connection.wait_for_hello(after=generation, timeout=timeout)
        self.devtools = DevTools(self.process.devtools_url)
        await self.devtools.open()
        await self.devtools.attach_page(f"worker={self.worker_id}")
        return hello

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """``Page.reload`` (or ``Page.crash`` then reload when ``hung``) and wait for the new hello."""
        if self.devtools is None:
            raise BrowserError(f"worker {self.worker_id!r} has no DevTools session (not started?)")
        generation = self.connection.generation
        if hung:
            await self.devtools.crash_and_reload(timeout=timeout)
        else:
            await self.devtools.reload(timeout=timeout)
        return await self.connection.wait_for_hello(after=generation, timeout=timeout)

    async def restart(self, timeout: float = 20.0) -> Hello:
        """Kill the browser's whole process group, launch a fresh one, and wait for its hello."""
        await self.stop()
        return await self.start(timeout)

    async def stop(self) -> None:
        """Close the DevTools session and kill the browser (idempotent)."""
        devtools, self.devtools = self.devtools, None
        process, self.process = self.process, None
        if devtools is not None:
            await devtools.close()
        if process is not None:
            await process.kill()

    async def inject(self, fault: InjectedFault | str) -> None:
        """Cause ``fault``: kill the group or renderer, hang the page, drop the socket, lose the device."""
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
