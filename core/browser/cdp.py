"""A minimal Chrome DevTools Protocol client: just what recovery needs.

:class:`DevTools` talks to the browser-wide endpoint (from ``DevToolsActivePort``), finds the page
target by its URL, attaches to it (flat sessions) and sends ``Page.reload`` or ``Page.crash``.
A hung page cannot reload (the browser waits for its JavaScript to yield), so
:meth:`DevTools.crash_and_reload` crashes the renderer first; the tab then loads afresh. Attach
(:meth:`DevTools.attach_page`) while the page is healthy: attaching to a hung page hangs too.
"""

# ruff: noqa: ASYNC109 -- each CDP command has its own deadline, turned into a typed DevToolsError.

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from poolwarden.errors import DevToolsError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

__all__ = ["DevTools"]


class DevTools:
    """A connection to a browser's DevTools endpoint. Use as ``async with DevTools(url) as cdp:``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._watchers: list[tuple[str, str | None, dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
        self.page_target_id: str | None = None
        self.page_session: str | None = None

    async def __aenter__(self) -> DevTools:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self, timeout: float = 5.0) -> None:
        """Connect to the endpoint."""
        try:
            self._ws = await connect(self.url, max_size=2**24, open_timeout=timeout, compression=None)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise DevToolsError(f"cannot connect to DevTools at {self.url}: {exc}") from exc
        self._reader = asyncio.create_task(self._read(self._ws), name="cdp-reader")

    async def close(self) -> None:
        """Disconnect (the browser is not affected)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            await self._reader

    async def _read(self, ws: ClientConnection) -> None:
        error: Exception = DevToolsError("the DevTools connection closed")
        try:
            async for raw in ws:
                message = json.loads(raw)
                if "method" in message:
                    self._dispatch_event(message)
                    continue
                future = self._pending.pop(message.get("id", -1), None)
                if future is None or future.done():
                    continue  # an event, or the answer to a command nobody awaits (Page.crash)
                if "error" in message:
                    future.set_exception(DevToolsError(f"CDP error: {message['error']}"))
                else:
                    future.set_result(message.get("result", {}))
        except ConnectionClosed as exc:
            error = DevToolsError(f"the DevTools connection closed: {exc}")
        finally:
            for future in [*self._pending.values(), *(w[3] for w in self._watchers)]:
                if not future.done():
                    future.set_exception(error)
            self._pending.clear()
            self._watchers.clear()

    def _dispatch_event(self, message: dict[str, Any]) -> None:
        params = message.get("params", {})
        for watcher in list(self._watchers):
            method, session, expected, future = watcher
            if (
                message["method"] == method
                and session in (None, message.get("sessionId"))
                and all(params.get(k) == v for k, v in expected.items())
            ):
                self._watchers.remove(watcher)
                if not future.done():
                    future.set_result(params)

    def expect_event(
        self, method: str, *, session: str | None = None, params: dict[str, Any] | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """A future for the next ``method`` event (on ``session``, whose params include ``params``).

        Register it before causing the event.
        """
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._watchers.append((method, session, dict(params or {}), future))
        return future

    def _forget(self, future: asyncio.Future[dict[str, Any]]) -> None:
        self._watchers = [w for w in self._watchers if w[3] is not future]
        future.cancel()

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Send a command and return its result; raises DevToolsError on an error or no answer."""
        ws = self._ws
        if ws is None:
            raise DevToolsError("DevTools is not connected")
        command_id = next(self._ids)
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        try:
            async with asyncio.timeout(timeout):
                await ws.send(json.dumps(message))
                return await future
        except TimeoutError:
            raise DevToolsError(f"{method}: no answer within {timeout} s") from None
        except ConnectionClosed as exc:
            raise DevToolsError(f"{method}: the DevTools connection closed") from exc
        finally:
            self._pending.pop(command_id, None)

    async def fire(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> None:
        """Send a command without waiting for its answer (``Page.crash`` never gets one)."""
        ws = self._ws
        if ws is None:
            raise DevToolsError("DevTools is not connected")
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            await ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise DevToolsError(f"{method}: the DevTools connection closed") from exc

    async def page_target(self, url_contains: str = "") -> str:
        """The target id of the first page whose URL contains ``url_contains``."""
        result = await self.send("Target.getTargets")
        for info in result.get("targetInfos", []):
            if info.get("type") == "page" and url_contains in info.get("url", ""):
                return str(info["targetId"])
        raise DevToolsError(f"no page target whose URL contains {url_contains!r}")

    async def attach(self, target_id: str) -> str:
        """Attach to a target and return the flat session id to send page commands on."""
        result = await self.send("Target.attachToTarget", {"targetId": target_id, "flatten": True})
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
