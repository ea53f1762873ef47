"""A minimal WebDriver BiDi client for Firefox: start a session, find the worker page, reload it.

Used only for a Firefox launched with its opt-in port (``launch_firefox(remote_port=True)``): that
port is reachable by every local user, see docs/bridge.md, "Firefox".

Firefox has no Chrome DevTools Protocol; it speaks WebDriver BiDi on the port it writes to
``WebDriverBiDiServer.json`` in its profile. There is no ``Page.crash`` equivalent, so a hung
Firefox page cannot be reloaded: its recovery goes to the restart rung. A page whose content
process died shows ``about:blank`` in the same browsing context, so it is found again by the
context id taken while it was healthy, and navigated back (:meth:`BiDi.navigate`).
"""

# ruff: noqa: ASYNC109 -- each command has its own deadline, turned into a typed DevToolsError.

from __future__ import annotations

from poolwarden.browser.remote import RemoteClient
from poolwarden.errors import DevToolsError

__all__ = ["BiDi"]


class BiDi(RemoteClient):
    """A WebDriver BiDi session on a Firefox started with ``--remote-debugging-port``, over a
    :class:`~poolwarden.browser.remote.WebSocketTransport` to that loopback port."""

    async def start_session(self) -> None:
        """Open the BiDi session (needed before any browsingContext command)."""
        await self.send("session.new", {"capabilities": {}})

    async def page_context(self, url_contains: str = "") -> str:
        """The browsing context id of the first top-level page whose URL contains ``url_contains``."""
        tree = await self.send("browsingContext.getTree", {"maxDepth": 0})
        for context in tree.get("contexts", []):
            if url_contains in context.get("url", ""):
                return str(context["context"])
        raise DevToolsError(f"no browsing context whose URL contains {url_contains!r}")

    async def reload(self, url_contains: str = "", timeout: float = 10.0) -> None:
        """Reload the page and wait until it has loaded."""
        context = await self.page_context(url_contains)
        # ignoreCache is "unsupported operation" in Firefox; the page is served no-store anyway.
        params = {"context": context, "wait": "complete"}
        await self.send("browsingContext.reload", params, timeout=timeout)

    async def navigate(self, context: str, url: str, timeout: float = 10.0, wait: str = "complete") -> None:
        """Load ``url`` in the browsing context ``context`` and wait until it has loaded (``wait``:
        ``"none"`` returns once the navigation started, ``"interactive"``, ``"complete"``)."""
        params = {"context": context, "url": url, "wait": wait}
        await self.send("browsingContext.navigate", params, timeout=timeout)
