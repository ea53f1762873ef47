"""What Chromium and Firefox workers share: a browser process, its page, and a remote-control session.

A subclass says how to launch its browser, how its page is opened (over the remote-control
session, at a URL without any secret, with the worker's secret handed to the page by a script the
browser runs before the page's own: :func:`secret_script`; or, for a Firefox with no remote
control, as its start page from the private profile), how to open its remote-control session
(CDP on that pipe for Chromium, WebDriver BiDi for a Firefox that opens a port, none otherwise)
and how to reconnect its page; starting, restarting, stopping and fault injection are the same.
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from poolwarden.errors import BrowserError, BrowserLaunchFailed
from poolwarden.workers.handle import InjectedFault

if TYPE_CHECKING:
    from poolwarden.bridge.server import BridgeServer, WorkerConnection
    from poolwarden.browser.launcher import BrowserProcess
    from poolwarden.browser.remote import RemoteClient
    from poolwarden.protocol import Hello

__all__ = ["BrowserWorker", "SpareSource", "secret_script"]

log = logging.getLogger(__name__)

SpareSource = Callable[[str], "BrowserWorker | None"]
"""Hands the restart rung a ready warm spare of a browser kind, or None (:meth:`BrowserWorker.restart`)."""


def secret_script(origin: str, secret: str) -> str:
    """The script that hands ``secret`` to documents of ``origin`` (the bridge's page) and to no other.

    It defines ``globalThis.__poolwardenSecret``, which worker.js reads once and deletes.
    """
    return (
        f"if (location.origin === {json.dumps(origin)}) {{\n"
        f"  Object.defineProperty(globalThis, '__poolwardenSecret', "
        f"{{ value: {json.dumps(secret)}, configurable: true }});\n"
        "}\n"
    )


async def _kill(process: BrowserProcess | None, remote: RemoteClient | None, *, remove_profile: bool) -> None:
    try:
        if process is not None:
            # The process group first: a stopped or hung browser would hold up the closing of its
            # remote-control session, and a dead one's closes at once.
            await process.kill(remove_profile=remove_profile)
    finally:
        if remote is not None:
            await remote.close()


class BrowserWorker:
    """A worker page in its own headless browser, launched by and attached to ``server``."""

    browser = "browser"
    start_timeout = 20.0

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
        self.remote: RemoteClient | None = None
        self.spare_source: SpareSource | None = None
        """Set by a pool with warm spares: the restart rung promotes one instead of launching."""
        self.on_promoted: Callable[[BrowserWorker, float], None] | None = None
        """Called with the spare and the seconds its promotion took, once it serves this worker id."""
        self._reaping: set[asyncio.Task[None]] = set()

    @property
    def connection(self) -> WorkerConnection:
        """The logical connection this worker's page attaches to."""
        return self.server.worker(self.worker_id)

    async def _launch(self, timeout: float) -> BrowserProcess:
        raise NotImplementedError

    async def _open_page(self, process: BrowserProcess, timeout: float) -> None:
        """Load the worker page in the launched browser (nothing to do if it was launched on it)."""

    def _remote_client(self, process: BrowserProcess) -> RemoteClient | None:
        """The remote-control session to keep (None: the browser is driven by nothing)."""
        raise NotImplementedError

    async def _prepare_remote(self, client: RemoteClient) -> None:
        raise NotImplementedError

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """Reload the page (crashing it first when ``hung``) and return the new hello."""
        raise NotImplementedError

    async def start(self, timeout: float | None = None) -> Hello:
        """Launch the browser, load the worker page, wait for its hello, open the remote-control session."""
        timeout = self.start_timeout if timeout is None else timeout
        generation = self.connection.generation
        self.process = await self._launch(timeout)
        await self._open_page(self.process, timeout)
        hello = await self._hello_or_exit(self.process, generation, timeout)
        # Held before it is opened, so stop() closes it even if this start is cancelled midway.
        self.remote = self._remote_client(self.process)
        if self.remote is not None:
            await self.remote.open()
            await self._prepare_remote(self.remote)
        return hello

    async def _hello_or_exit(self, process: BrowserProcess, generation: int, timeout: float) -> Hello:
        # A browser that dies before its page says hello (a Firefox started with no port is not
        # watched by anything else) fails the start at once, with what it wrote to stderr.
        hello = asyncio.ensure_future(self.connection.wait_for_hello(after=generation, timeout=timeout))
        exited = asyncio.ensure_future(process.process.wait())
        try:
            await asyncio.wait({hello, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (hello, exited):
                task.cancel()
            await asyncio.gather(hello, exited, return_exceptions=True)
        if hello.cancelled():
            tail = await process.stderr_tail()
            raise BrowserLaunchFailed(
                f"{self.browser} exited with {process.process.returncode} before its page said hello: {tail}"
            )
        return hello.result()

    async def restart(self, timeout: float | None = None) -> Hello:
        """Declare the old page dead, kill the browser's whole process group, launch a fresh one,
        and wait for its hello.

        With a warm spare ready (``spare_source``), the spare's browser and page become this
        worker's instead of a launch (:meth:`_promote`), and the old browser, SIGKILLed first, is
        reaped and its profile removed in the background (:meth:`stop` waits for that). A spare
        that fails its promotion is stopped and the launch happens as without one.
        """
        # Before the kill: its socket may still look live (a hung page's does), and a live worker
        # id refuses every new hello, the relaunched page's too.
        self.connection.declare_dead("restart rung: relaunching the browser")
        spare = self.spare_source(self.browser) if self.spare_source is not None else None
        if spare is not None:
            self._reap_in_background()
            try:
                return await self._promote(spare, self.start_timeout if timeout is None else timeout)
            except Exception as error:  # the launch below is the fallback
                log.warning(
                    "worker %s: promoting spare %s failed: %r", self.worker_id, spare.worker_id, error
                )
                await self._stop(remove_profile=True)
                await spare.stop()
                self.server.forget(spare.worker_id)  # its secret admits nothing from now on
        old = await self._stop(remove_profile=False)
        # The old profile is deleted while the new browser starts, off the recovery's critical path.
        cleanup = asyncio.create_task(old.remove_profile()) if old is not None else None
        try:
            return await self.start(timeout)
        finally:
            if cleanup is not None:
                await cleanup

    def _reap_in_background(self) -> None:
        """SIGKILL the browser's group now; close its session, wait for it, remove its profile in
        a task that :meth:`stop` waits for."""
        remote, self.remote = self.remote, None
        process, self.process = self.process, None
        if process is not None:
            process.cut_lifeline()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        task = asyncio.create_task(_kill(process, remote, remove_profile=True), name=f"reap {self.worker_id}")
        self._reaping.add(task)
        task.add_done_callback(self._reaped)

    def _reaped(self, task: asyncio.Task[None]) -> None:
        self._reaping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("worker %s: reaping the old browser failed: %r", self.worker_id, task.exception())

    async def _promote(self, spare: BrowserWorker, timeout: float) -> Hello:
        """Take over ``spare``'s browser and its page (already said hello): this worker's now."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Held by this worker first, so stop() kills the spare's browser whatever happens next.
        self.process, spare.process = spare.process, None
        self.remote, spare.remote = spare.remote, None
        if self.process is None:
            raise BrowserError(f"spare {spare.worker_id!r} has no browser")
        async with asyncio.timeout(timeout):
            await self._adopt_identity(spare)  # a reload of the tab must come back as this worker
            hello = await self.server.adopt(self.worker_id, spare.worker_id)
        if self.on_promoted is not None:
            self.on_promoted(spare, loop.time() - started)
        return hello

    async def _adopt_identity(self, spare: BrowserWorker) -> None:
        """Make the promoted page's reloads hand it this worker id's secret (nothing by default)."""

    async def stop(self) -> None:
        """Close the remote-control session and kill the browser (idempotent); wait for the
        reaping of a browser a promotion replaced."""
        try:
            await self._stop(remove_profile=True)
        finally:
            if self._reaping:
                await asyncio.gather(*self._reaping, return_exceptions=True)

    async def _stop(self, *, remove_profile: bool) -> BrowserProcess | None:
        remote, self.remote = self.remote, None
        process, self.process = self.process, None
        await _kill(process, remote, remove_profile=remove_profile)
        return process

    async def stopped(self) -> bool:
        """Whether the browser's processes are stopped (SIGSTOP): it answers nothing, so only a
        restart helps."""
        process = self.process
        return process is not None and await process.stopped()

    async def pss_bytes(self) -> int | None:
        """PSS of the browser's whole process tree, sampled in a thread; None when not running."""
        return None if self.process is None else await self.process.pss_bytes()

    async def inject(self, fault: InjectedFault | str) -> None:
        """Cause ``fault``: kill the group or the page's process, hang the page, drop the socket,
        lose the GPU device (the last two need a page loaded with test hooks)."""
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
