"""A Chromium worker: one headless browser, its worker page, and a DevTools session to recover it.

:class:`ChromiumWorker` implements :class:`~poolwarden.workers.handle.WorkerHandle`. Its browser is
driven over ``--remote-debugging-pipe`` (no DevTools port on the machine) and dies with the
process that launched it. The page is opened over that pipe at a URL without any secret; the
worker id's secret reaches the page through a script added with
``Page.addScriptToEvaluateOnNewDocument``, which runs before the page's own in every document the
tab loads, so the reloads and crash-reloads of the recovery ladder get it too.

The DevTools session stays attached to the page from the start, because only a session set up
while the page was healthy can still crash it once it hangs.
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

from typing import TYPE_CHECKING

from poolwarden.browser.cdp import DevTools
from poolwarden.browser.launcher import BrowserProcess, launch_chromium
from poolwarden.errors import BrowserError
from poolwarden.workers.browser_worker import BrowserWorker, secret_script

if TYPE_CHECKING:
    from poolwarden.browser.remote import RemoteClient
    from poolwarden.protocol import Hello

__all__ = ["ChromiumWorker"]


class ChromiumWorker(BrowserWorker):
    """A worker page in its own headless Chromium (``webgpu`` adds ``--enable-unsafe-webgpu``)."""

    browser = "chromium"
    start_timeout = 20.0

    async def _launch(self, timeout: float) -> BrowserProcess:
        return await launch_chromium(
            executable=self.executable, webgpu=self.webgpu, extra_args=self.extra_args, timeout=timeout
        )

    async def _open_page(self, process: BrowserProcess, timeout: float) -> None:
        devtools = self._devtools(process)
        script = secret_script(self.server.origin, self.server.secret_for(self.worker_id))
        url = self.server.page_url(self.worker_id, hooks=self.hooks)
        await devtools.open_page(url, init_script=script, timeout=timeout)

    def _devtools(self, process: BrowserProcess) -> DevTools:
        if process.devtools is None:
            raise BrowserError(f"worker {self.worker_id!r}: chromium was launched without its DevTools pipe")
        return process.devtools

    def _remote_client(self, process: BrowserProcess) -> DevTools:
        return self._devtools(process)  # the pipe's one client, connected at launch

    async def _adopt_identity(self, spare: BrowserWorker) -> None:
        """Add this worker id's secret script to the promoted spare's tab: it runs after the
        spare's own in every document the tab loads, and so overrides the spare's secret."""
        devtools = self._devtools(self.process) if self.process is not None else None
        if devtools is None or devtools.page_session is None:
            raise BrowserError(f"worker {self.worker_id!r}: the spare has no page session")
        script = secret_script(self.server.origin, self.server.secret_for(self.worker_id))
        await devtools.send(
            "Page.addScriptToEvaluateOnNewDocument", {"source": script}, session=devtools.page_session
        )

    async def _prepare_remote(self, client: RemoteClient) -> None:
        """Nothing left to do: the page was attached before it was loaded."""

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """``Page.reload`` (or ``Page.crash`` then reload when ``hung``) and wait for the new hello."""
        if await self.stopped():
            # A stopped browser answers no DevTools command: the reload would only time out.
            return await self.restart(timeout=max(timeout, self.start_timeout))
        if not isinstance(self.remote, DevTools):
            raise BrowserError(f"worker {self.worker_id!r} has no DevTools session (not started?)")
        generation = self.connection.generation
        # The old page's socket may still be open (a hung page's is): free the worker id first,
        # or the reloaded page's hello would be refused as a takeover.
        self.connection.declare_dead(
            "reconnect rung: crashing and reloading" if hung else "reconnect rung: reloading"
        )
        if hung:
            await self.remote.crash_and_reload(timeout=timeout)
        else:
            await self.remote.reload(timeout=timeout)
        return await self.connection.wait_for_hello(after=generation, timeout=timeout)
