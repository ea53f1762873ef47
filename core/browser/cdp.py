"""A minimal Chrome DevTools Protocol client: just what recovery needs.

:class:`DevTools` talks to the browser-wide target over a transport (the private pipe of a Chromium
launched with ``--remote-debugging-pipe``), opens the worker page in the browser's tab with a
script that runs before every document it loads (how the page gets its secret without the secret
ever being in a URL or on a command line), keeps that tab attached (flat sessions) and sends
``Page.reload`` or ``Page.crash``.
A hung page cannot reload (the browser waits for its JavaScript to yield), so
:meth:`DevTools.crash_and_reload` crashes the renderer first; the tab then loads afresh. Attach
(:meth:`DevTools.attach_page`) while the page is healthy: attaching to a hung page hangs too.
"""

# ruff: noqa: ASYNC109 -- each CDP command has its own deadline, turned into a typed DevToolsError.

from __future__ import annotations

import asyncio

from poolwarden.browser.remote import RemoteClient, Transport
from poolwarden.errors import DevToolsError

__all__ = ["DevTools"]


class DevTools(RemoteClient):
    """A connection to a Chromium's browser-wide DevTools target, with one page kept attached."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self.page_target_id: str | None = None
        self.page_session: str | None = None

    async def open_page(self, url: str, *, init_script: str | None = None, timeout: float = 10.0) -> str:
        """Attach to the browser's tab (opening one if it has none yet), add ``init_script`` to run
        in every document the tab loads from now on, then navigate it to ``url``; returns the session.

        The script is kept by the browser for this session and runs again, before the page's own
        scripts, after every ``Page.reload`` and after ``Page.crash`` and a reload: what it holds
        reaches the page without being in the URL. The load itself is not awaited (the page's hello
        is the sign it is up).
        """
        await self.send("Target.setDiscoverTargets", {"discover": True}, timeout=timeout)
        try:
            target = await self.page_target(timeout=timeout)
        except DevToolsError:  # the first tab is not there yet: open our own
            created = await self.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
            target = str(created["targetId"])
        self.page_target_id = target
        self.page_session = session = await self.attach(target, timeout=timeout)
        await self.send("Page.enable", session=session, timeout=timeout)
        if init_script is not None:
            params = {"source": init_script}
            await self.send("Page.addScriptToEvaluateOnNewDocument", params, session=session, timeout=timeout)
        result = await self.send("Page.navigate", {"url": url}, session=session, timeout=timeout)
        if result.get("errorText"):
            raise DevToolsError(f"Page.navigate to {url}: {result['errorText']}")
        return session

    async def page_target(self, url_contains: str = "", *, timeout: float = 5.0) -> str:
        """The target id of the first page whose URL contains ``url_contains``."""
        result = await self.send("Target.getTargets", timeout=timeout)
        for info in result.get("targetInfos", []):
            if info.get("type") == "page" and url_contains in info.get("url", ""):
                return str(info["targetId"])
        raise DevToolsError(f"no page target whose URL contains {url_contains!r}")

    async def attach(self, target_id: str, *, timeout: float = 5.0) -> str:
        """Attach to a target and return the flat session id to send page commands on."""
        result = await self.send(
            "Target.attachToTarget", {"targetId": target_id, "flatten": True}, timeout=timeout
        )
        return str(result["sessionId"])

    async def attach_page(self, url_contains: str = "") -> str:
        """Attach to the page whose URL contains ``url_contains`` and keep the session for recovery.

        Do it while the page is healthy: a session set up before a hang can still crash the page,
        one attached afterwards cannot (attaching needs the page's own thread).
        """
        await self.send("Target.setDiscoverTargets", {"discover": True})
        self.page_target_id = await self.page_target(url_contains)
        self.page_session = await self.attach(self.page_target_id)
        await self.send("Page.enable", session=self.page_session)
        return self.page_session

    def _session(self) -> tuple[str, str]:
        if self.page_session is None or self.page_target_id is None:
            raise DevToolsError("no page attached: call attach_page() first")
        return self.page_target_id, self.page_session

    async def reload(self, timeout: float = 5.0, attempts: int = 3) -> None:
        """``Page.reload`` the attached page and wait for its load event.

        A reload sent while the browser has not yet noticed a dead renderer is lost (it goes to the
        dying one), so a reload without a load event soon (0.5 s, then 1 s, ... within ``timeout``)
        is sent again. A hung page never loads: use :meth:`crash_and_reload` for it.
        """
        _, session = self._session()
        last: Exception | None = None
        deadline = asyncio.get_running_loop().time() + timeout
        for attempt in range(attempts):
            remaining = deadline - asyncio.get_running_loop().time()
            wait = remaining if attempt == attempts - 1 else min(remaining, 0.5 * 2**attempt)
            loaded = self.expect_event("Page.loadEventFired", session=session)
            try:
                async with asyncio.timeout(wait):
                    await self.send("Page.reload", {"ignoreCache": True}, session=session, timeout=timeout)
                    await loaded
                return
            except (TimeoutError, DevToolsError) as exc:  # lost, or refused by a target still crashing
                last = exc
            finally:
                self._forget(loaded)
        raise DevToolsError(f"Page.reload: the page did not load within {timeout} s (last: {last!r})")

    async def crash_and_reload(self, timeout: float = 5.0) -> None:
        """Crash the attached page's renderer (``Page.crash``), then ``Page.reload`` it afresh.

        The session survives the crash, so the same session reloads the page.
        """
        target, session = self._session()
        crashed = self.expect_event("Target.targetCrashed", params={"targetId": target})
        # Page.crash is answered only with a "Target crashed" error; the event is what counts.
        await self.fire("Page.crash", session=session)
        try:
            async with asyncio.timeout(timeout):
                await crashed
        except TimeoutError:
            raise DevToolsError(f"Page.crash: the page did not crash within {timeout} s") from None
        await self.reload(timeout)
