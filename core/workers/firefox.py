"""A Firefox worker: one headless Firefox and its worker page; by default nothing can drive it.

:class:`FirefoxWorker` implements :class:`~poolwarden.workers.handle.WorkerHandle`.

Firefox has no private remote-control channel (no ``--remote-debugging-pipe``): its WebDriver
BiDi agent listens on a loopback TCP port, without authentication, that every local user can
reach; whoever holds its one session can run script in the worker page, read files as our user
through ``file://`` and install extensions. So by default (``remote_port=False``) the worker opens
no port at all: the page URL, secret included, is the browser's start page, set in the profile's
prefs (the profile is 0700, so no other user reads it; nothing is on the command line). Without
remote control nothing can reload the page, so :meth:`FirefoxWorker.reconnect` restarts the
browser (a new page in a fresh profile, about 3 s).

``remote_port=True`` is the opt-in for a host where every local user is trusted: Firefox listens
for BiDi on a random loopback port; the worker opens the one BiDi session Firefox allows as soon
as the port is up, hands the secret over as a preload script (``script.addPreloadScript``, run
before the page's own script in every document, reloads too) and only then navigates the tab
from ``about:blank`` to the page, at a URL without the secret; ``reconnect`` then reloads the page
over BiDi (about 0.3 s). docs/bridge.md says what that port exposes.
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from poolwarden.browser.bidi import BiDi
from poolwarden.browser.launcher import BrowserProcess, launch_firefox
from poolwarden.browser.remote import WebSocketTransport
from poolwarden.errors import BrowserError
from poolwarden.workers.browser_worker import BrowserWorker, secret_script

if TYPE_CHECKING:
    from poolwarden.bridge.server import BridgeServer
    from poolwarden.browser.remote import RemoteClient
    from poolwarden.protocol import Hello

__all__ = ["FirefoxWorker"]


class FirefoxWorker(BrowserWorker):
    """A worker page in its own headless Firefox (``webgpu`` sets the WebGPU prefs).

    ``remote_port=True`` lets Firefox listen for WebDriver BiDi on a loopback port that every
    local user can reach (faster reconnects; see the module docstring): only where every local
    user is trusted.
    """

    browser = "firefox"
    start_timeout = 30.0  # Firefox takes ~3 s to a hello here, Chromium ~0.6 s
    page_context: str | None = None
    """With ``remote_port``: the worker page's BiDi browsing context id, found at start."""

    def __init__(
        self,
        server: BridgeServer,
        worker_id: str,
        *,
        executable: str | None = None,
        webgpu: bool = True,
        hooks: bool = False,
        remote_port: bool = False,
        extra_args: Iterable[str] = (),
    ) -> None:
        super().__init__(
            server, worker_id, executable=executable, webgpu=webgpu, hooks=hooks, extra_args=extra_args
        )
        self.remote_port = remote_port

    async def _launch(self, timeout: float) -> BrowserProcess:
        # Without a port the page is the start page, secret included (the profile is private);
        # with one it is loaded over BiDi once the secret's preload script is in place.
        url = "about:blank"
        if not self.remote_port:
            url = self.server.page_url(self.worker_id, hooks=self.hooks, with_secret=True)
        return await launch_firefox(
            url,
            executable=self.executable,
            webgpu=self.webgpu,
            remote_port=self.remote_port,
            extra_args=self.extra_args,
            timeout=timeout,
        )

    async def _open_page(self, process: BrowserProcess, timeout: float) -> None:
        if not self.remote_port:
            return  # it opens its start page by itself
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

    async def _adopt_identity(self, spare: BrowserWorker) -> None:
        """Take the spare's browsing context; with a BiDi session, add this worker id's secret as a
        preload script after the spare's (it overrides it in every document the tab loads). With
        no session nothing reloads the tab: the page itself reconnects with what ``rebind`` told it."""
        if isinstance(spare, FirefoxWorker):
            self.page_context, spare.page_context = spare.page_context, None
        if isinstance(self.remote, BiDi):
            script = secret_script(self.server.origin, self.server.secret_for(self.worker_id))
            await self.remote.send(
                "script.addPreloadScript", {"functionDeclaration": f"() => {{\n{script}}}"}
            )

    def _remote_client(self, process: BrowserProcess) -> RemoteClient | None:
        if not self.remote_port:
            return None
        if self.remote is None:
            raise BrowserError(f"worker {self.worker_id!r}: no BiDi session was opened")
        return self.remote

    async def _prepare_remote(self, client: RemoteClient) -> None:
        """Nothing left to do: the session was opened before the page was loaded."""

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """Reload the page over BiDi; without a BiDi session (the default), or for a hung page
        (Firefox cannot crash one from outside), restart the browser instead."""
        if hung or not self.remote_port or await self.stopped():
            return await self.restart(timeout=max(timeout, self.start_timeout))
        if not isinstance(self.remote, BiDi) or self.page_context is None:
            raise BrowserError(f"worker {self.worker_id!r} has no BiDi session (not started?)")
        generation = self.connection.generation
        self.connection.declare_dead("reconnect rung: reloading")  # else the new page's hello is refused
        url = self.server.page_url(self.worker_id, hooks=self.hooks)
        await self.remote.navigate(self.page_context, url, timeout=timeout)
        return await self.connection.wait_for_hello(after=generation, timeout=timeout)
