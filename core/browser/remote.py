"""A JSON command/event client over a message transport: what CDP and WebDriver BiDi share.

Both protocols send ``{"id", "method", "params"}`` commands, answer with the same ``id`` (a
``result``, or an ``error``) and push events that carry a ``method``. :class:`RemoteClient` matches
answers to commands, lets callers wait for an event, and fails everything pending with
:class:`~poolwarden.errors.DevToolsError` when the transport closes.

How the messages travel is a :class:`Transport`: :class:`WebSocketTransport` (WebDriver BiDi on
Firefox's loopback port) or :class:`~poolwarden.browser.pipe.PipeTransport` (CDP over the two
pipes Chromium inherits with ``--remote-debugging-pipe``, reachable by no other process).
"""

# ruff: noqa: ASYNC109 -- each command has its own deadline, turned into a typed DevToolsError.

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any, Protocol, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from poolwarden.errors import DevToolsError

__all__ = ["RemoteClient", "Transport", "WebSocketTransport"]


class Transport(Protocol):
    """Whole JSON messages (text) to and from a browser's remote-control endpoint."""

    async def open(self, timeout: float) -> None:
        """Connect (a transport that is connected from the start does nothing)."""
        ...

    async def send(self, message: str) -> None:
        """Send one message; raises DevToolsError once the transport is closed."""
        ...

    async def receive(self) -> str | None:
        """The next message, or None once the peer has closed; raises DevToolsError on a broken link."""
        ...

    async def close(self) -> None:
        """Close our end (idempotent)."""
        ...


class WebSocketTransport:
    """Messages as WebSocket text frames (Firefox's WebDriver BiDi endpoint)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ws: ClientConnection | None = None

    async def open(self, timeout: float) -> None:
        try:
            self._ws = await connect(self.url, max_size=2**24, open_timeout=timeout, compression=None)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise DevToolsError(f"cannot connect to {self.url}: {exc}") from exc

    def _require(self) -> ClientConnection:
        if self._ws is None:
            raise DevToolsError("not connected")
        return self._ws

    async def send(self, message: str) -> None:
        try:
            await self._require().send(message)
        except ConnectionClosed as exc:
            raise DevToolsError(f"the remote-control connection closed: {exc}") from exc

    async def receive(self) -> str | None:
        try:
            frame = await self._require().recv()
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code in (1000, 1001):
                return None
            raise DevToolsError(f"the remote-control connection closed: {exc}") from exc
        return frame if isinstance(frame, str) else frame.decode()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


class RemoteClient:
    """A connection to a browser's remote-control endpoint. Use as ``async with Client(t) as c:``."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._watchers: list[tuple[str, str | None, dict[str, Any], asyncio.Future[dict[str, Any]]]] = []

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        """Whether the client is connected and its reader still runs."""
        return self._reader is not None and not self._reader.done() and not self._closed

    async def open(self, timeout: float = 5.0) -> None:
        """Connect the transport and start reading (idempotent)."""
        if self._reader is not None:
            return
        await self.transport.open(timeout)
        self._reader = asyncio.create_task(self._read(), name="remote-protocol-reader")

    async def close(self) -> None:
        """Disconnect. Over a WebSocket the browser is not affected; closing Chromium's pipe makes
        it close itself (that is how a browser never outlives its owner)."""
        self._closed = True
        await self.transport.close()
        if self._reader is not None:
            await self._reader

    async def _read(self) -> None:
        error: Exception = DevToolsError("the remote-control connection closed")
        try:
            while (raw := await self.transport.receive()) is not None:
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
        except DevToolsError as exc:
            error = exc
        except ValueError as exc:
            error = DevToolsError(f"the browser sent a message that is not JSON: {exc}")
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
        if not self.is_open:
            future.set_exception(DevToolsError("not connected"))
            return future
        self._watchers.append((method, session, dict(params or {}), future))
        return future

    def _forget(self, future: asyncio.Future[dict[str, Any]]) -> None:
        self._watchers = [w for w in self._watchers if w[3] is not future]
        if future.done() and not future.cancelled():
            future.exception()  # retrieved: a close that failed it is reported elsewhere
        future.cancel()

    def _message(self, method: str, params: dict[str, Any] | None, session: str | None) -> tuple[int, str]:
        if not self.is_open:
            raise DevToolsError(f"{method}: not connected")
        command_id = next(self._ids)
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        return command_id, json.dumps(message)

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Send a command and return its result; raises DevToolsError on an error or no answer."""
        command_id, text = self._message(method, params, session)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        try:
            async with asyncio.timeout(timeout):
                await self.transport.send(text)
                return await future
        except TimeoutError:
            raise DevToolsError(f"{method}: no answer within {timeout} s") from None
        finally:
            self._pending.pop(command_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # a close while sending: the send's own error is raised

    async def fire(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> None:
        """Send a command without waiting for its answer (``Page.crash`` never gets one)."""
        _, text = self._message(method, params, session)
        await self.transport.send(text)
