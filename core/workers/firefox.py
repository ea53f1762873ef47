"""A Firefox worker: one headless Firefox, its worker page, and a WebDriver BiDi session.

:class:`FirefoxWorker` implements :class:`~poolwarden.workers.handle.WorkerHandle`. Firefox has no
way to crash a hung page from outside (no ``Page.crash``), so ``reconnect(hung=True)`` restarts
the browser; a page that is merely disconnected, or whose content process died, is loaded again
over BiDi in its browsing context.

Firefox has no private remote-control channel (no ``--remote-debugging-pipe`` for WebDriver BiDi):
BiDi listens on a loopback port. So the worker opens the one BiDi session Firefox allows as soon
as the port is up (another user's ``session.new`` is then refused; had one got in first, ours is
refused and the start fails), adds the worker's secret as a preload script
(``script.addPreloadScript``, run before the page's own script in every document, reloads too),
and only then navigates the tab from ``about:blank`` to the page, at a URL without the secret.
docs/bridge.md says what the port still exposes to other local users.
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

from typing import TYPE_CHECKING

from poolwarden.browser.bidi import BiDi
from poolwarden.browser.launcher import BrowserProcess, launch_firefox
from poolwarden.browser.remote import WebSocketTransport
from poolwarden.errors import BrowserError
from poolwarden.workers.browser_worker import BrowserWorker, secret_script

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
        return await launch_firefox(
            "about:blank",
            executable=self.executable,
            webgpu=self.webgpu,
            extra_args=self.extra_args,
            timeout=timeout,
        )

    async def _open_page(self, process: BrowserProcess, timeout: float) -> None:
        client = BiDi(WebSocketTransport(process.devtools_url))
        self.remote = client  # held before it is opened, so stop() closes it even if this is cancelled
        await client.open(timeout)
        await client.start_session()  # the one session: from now on nobody else gets one
        # Taken now: after the page's content process dies the context shows about:blank, and
        # only its id still finds it.
        self.page_context = await client.page_context("about:blank")
        script = secret_script(self.server.origin, self.server.secret_for(self.worker_id))
        await client.send(
            "script.addPreloadScript", {"functionDeclaration": f"() => {{\n{script}}}"}, timeout=timeout
        )
        url = self.server.page_url(self.worker_id, hooks=self.hooks)
        await client.navigate(self.page_context, url, timeout=timeout, wait="none")

    def _remote_client(self, process: BrowserProcess) -> RemoteClient:
        if self.remote is None:
            raise BrowserError(f"worker {self.worker_id!r}: no BiDi session was opened")
        return self.remote

    async def _prepare_remote(self, client: RemoteClient) -> None:
        """Nothing left to do: the session was opened before the page was loaded."""

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """Reload the page over BiDi; a hung page cannot be reloaded, so it is restarted instead."""
        if hung:
            return await self.restart(timeout=max(timeout, self.start_timeout))
        if not isinstance(self.remote, BiDi) or self.page_context is None:
            raise BrowserError(f"worker {self.worker_id!r} has no BiDi session (not started?)")
        generation = self.connection.generation
        self.connection.declare_dead("reconnect rung: reloading")  # else the new page's hello is refused
        url = self.server.page_url(self.worker_id, hooks=self.hooks)
        await self.remote.navigate(self.page_context, url, timeout=timeout)
        return await self.connection.wait_for_hello(after=generation, timeout=timeout)
