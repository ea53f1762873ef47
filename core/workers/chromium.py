"""A Chromium worker: one headless browser, its worker page, and a DevTools session to recover it.

:class:`ChromiumWorker` implements :class:`~poolwarden.workers.handle.WorkerHandle`. It keeps a
DevTools session attached to its page from the first hello on, because only a session set up while
the page was healthy can still crash it once it hangs.
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

from typing import TYPE_CHECKING

from poolwarden.browser.cdp import DevTools
from poolwarden.browser.launcher import BrowserProcess, launch_chromium
from poolwarden.errors import BrowserError
from poolwarden.workers.browser_worker import BrowserWorker

if TYPE_CHECKING:
    from poolwarden.browser.remote import RemoteClient
    from poolwarden.protocol import Hello

__all__ = ["ChromiumWorker"]


class ChromiumWorker(BrowserWorker):
    """A worker page in its own headless Chromium (``webgpu`` adds ``--enable-unsafe-webgpu``)."""

    browser = "chromium"
    start_timeout = 20.0

    async def _launch(self, url: str, timeout: float) -> BrowserProcess:
        return await launch_chromium(
            url, executable=self.executable, webgpu=self.webgpu, extra_args=self.extra_args, timeout=timeout
        )

    def _remote_client(self, process: BrowserProcess) -> DevTools:
        return DevTools(process.devtools_url)

    async def _prepare_remote(self, client: RemoteClient) -> None:
        assert isinstance(client, DevTools)
        await client.attach_page(f"worker={self.worker_id}")

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """``Page.reload`` (or ``Page.crash`` then reload when ``hung``) and wait for the new hello."""
        if not isinstance(self.remote, DevTools):
            raise BrowserError(f"worker {self.worker_id!r} has no DevTools session (not started?)")
        generation = self.connection.generation
        if hung:
            await self.remote.crash_and_reload(timeout=timeout)
        else:
            await self.remote.reload(timeout=timeout)
        return await self.connection.wait_for_hello(after=generation, timeout=timeout)
