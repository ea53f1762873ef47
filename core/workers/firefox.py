"""A Firefox worker: one headless Firefox, its worker page, and a WebDriver BiDi session.

:class:`FirefoxWorker` implements :class:`~poolwarden.workers.handle.WorkerHandle`. Firefox has no
way to crash a hung page from outside (no ``Page.crash``), so ``reconnect(hung=True)`` restarts
the browser; a page that is merely disconnected, or whose content process died, is loaded again
over BiDi in its browsing context.

Firefox has no private remote-control channel (no ``--remote-debugging-pipe`` for WebDriver BiDi),
so its page is loaded from the command line with the worker id's secret in the URL, and BiDi
listens on a loopback port: docs/bridge.md says what that exposes to other local users.
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

from typing import TYPE_CHECKING

from poolwarden.browser.bidi import BiDi
from poolwarden.browser.launcher import BrowserProcess, launch_firefox
from poolwarden.browser.remote import WebSocketTransport
from poolwarden.errors import BrowserError
from poolwarden.workers.browser_worker import BrowserWorker

if TYPE_CHECKING:
    from poolwarden.browser.remote import RemoteClient
    from poolwarden.protocol import Hello

__all__ = ["FirefoxWorker"]


class FirefoxWorker(BrowserWorker):
    """A worker page in its own headless Firefox (``webgpu`` sets the WebGPU prefs)."""

    browser = "firefox"
    start_timeout = 30.0  # Firefox takes ~3 s to a hello here, Chromium ~0.6 s
    page_context: str | None = None
    """The worker page's BiDi browsing context id, found at start."""

    async def _launch(self, timeout: float) -> BrowserProcess:
        url = self.server.page_url(self.worker_id, hooks=self.hooks, with_secret=True)
        return await launch_firefox(
            url, executable=self.executable, webgpu=self.webgpu, extra_args=self.extra_args, timeout=timeout
        )

    def _remote_client(self, process: BrowserProcess) -> BiDi:
        return BiDi(WebSocketTransport(process.devtools_url))

    async def _prepare_remote(self, client: RemoteClient) -> None:
        assert isinstance(client, BiDi)
        await client.start_session()
        # Taken while the page is healthy: after its content process dies the context shows
        # about:blank, and only its id still finds it.
        self.page_context = await client.page_context(f"worker={self.worker_id}")

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """Reload the page over BiDi; a hung page cannot be reloaded, so it is restarted instead."""
        if hung:
            return await self.restart(timeout=max(timeout, self.start_timeout))
        if not isinstance(self.remote, BiDi) or self.page_context is None:
            raise BrowserError(f"worker {self.worker_id!r} has no BiDi session (not started?)")
        generation = self.connection.generation
        url = self.server.page_url(self.worker_id, hooks=self.hooks, with_secret=True)
        await self.remote.navigate(self.page_context, url, timeout=timeout)
        return await self.connection.wait_for_hello(after=generation, timeout=timeout)
