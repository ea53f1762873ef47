"""A JSON command/event client over a WebSocket: the transport shared by CDP and WebDriver BiDi.

Both protocols send ``{"id", "method", "params"}`` commands, answer with the same ``id`` (a
``result``, or an ``error``) and push events that carry a ``method``. :class:`RemoteClient` matches
answers to commands, lets callers wait for an event, and fails everything pending with
:class:`~poolwarden.errors.DevToolsError` when the socket closes.
"""

# ruff: noqa: ASYNC109 -- each command has its own deadline, turned into a typed DevToolsError.

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from poolwarden.errors import DevToolsError

__all__ = ["RemoteClient"]


class RemoteClient:
    """A connection to a browser's remote-control endpoint. Use as ``async with Client(url) as c:``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._watchers: list[tuple[str, str | None, dict[str, Any], asyncio.Future[dict[str, Any]]]] = []

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self, timeout: float = 5.0) -> None:
        """Connect to the endpoint."""
        try:
            self._ws = await connect(self.url, max_size=2**24, open_timeout=timeout, compression=None)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise DevToolsError(f"cannot connect to {self.url}: {exc}") from exc
        self._reader = asyncio.create_task(self._read(self._ws), name="remote-protocol-reader")

    async def close(self) -> None:
        """Disconnect (the browser is not affected)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            await self._reader

    async def _read(self, ws: ClientConnection) -> None:
        error: Exception = DevToolsError("the remote-control connection closed")
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
                    future.set_exception(
                        DevToolsError(
                            f"remote protocol error: {message['error']} {message.get('message', '')}"
                        )
                    )
                else:
                    future.set_result(message.get("result", {}))
        except ConnectionClosed as exc:
            error = DevToolsError(f"the remote-control connection closed: {exc}")
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
            raise DevToolsError("not connected")
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
            raise DevToolsError(f"{method}: the remote-control connection closed") from exc
        finally:
            self._pending.pop(command_id, None)

    async def fire(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> None:
        """Send a command without waiting for its answer (``Page.crash`` never gets one)."""
        ws = self._ws
        if ws is None:
            raise DevToolsError("not connected")
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            await ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise DevToolsError(f"{method}: the remote-control connection closed") from exc
