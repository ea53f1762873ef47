"""The bridge server: one loopback port serving the worker page over HTTP and its WebSocket.

A :class:`BridgeServer` belongs to one pool. It holds a secret key (``token``) that it never gives
out; each worker id gets its own secret derived from it (:meth:`BridgeServer.secret_for`, an
HMAC of the worker id), which that worker's page presents in its hello. A page thus holds only
its own worker's secret: one that leaks lets no one speak as another worker. The WebSocket
handshake is refused (HTTP 403) for any Origin but the server's own, and the connection is closed
(code 4401) for a hello whose secret is not its worker id's.

How a page gets its secret: a Chromium worker hands it over its private DevTools pipe as a script
that runs before the page's own, never in the URL. A Firefox worker (which has no pipe) opens no
remote port by default: the page's URL with its secret (``page_url(with_secret=True)``) is the
start page written in the browser's own profile, a folder only its user can read; with the
opt-in BiDi port, it is handed over the one BiDi session instead. docs/bridge.md says what a
local attacker can and cannot do with each browser.

Each worker page carries a worker id in its URL. Worker ids are the pool's: the server keeps one
:class:`WorkerConnection` per worker id the pool asked for (:meth:`BridgeServer.worker`,
:meth:`BridgeServer.secret_for`), and a hello for any other id is refused (4401) without leaving
a trace in any table. The connection outlives the sockets: when the page reloads, or its browser
is restarted, the new socket's hello re-attaches to the same object and bumps its ``generation``.
Callers (the pool, the recovery ladder) hold on to that object and use its async methods.

No takeover: while a worker id's socket is live, a hello for that id is refused with
:data:`CLOSE_WORKER_LIVE` (4409) and the live socket keeps serving, whoever the newcomer is and
whatever secret it holds. The id is free again once its socket has closed (a page that lost its
socket re-attaches by itself), or once the pool has declared the worker dead
(:meth:`WorkerConnection.declare_dead`, which the recovery ladder's reconnect and restart rungs
call before they reload or relaunch the page): that socket is then detached at once and closed
with :data:`CLOSE_DECLARED_DEAD` (4410).

Malformed, unknown or oversized messages get an ``error`` reply and an event; the connection
stays up until it has used up its strikes (:class:`~poolwarden.protocol.StrikeCounter`),
then it is closed with 1008.
"""

# ruff: noqa: ASYNC109 -- every request takes its own timeout: it becomes a typed DeadlineExceeded
# naming the worker, and app_ping passes part of it to the page as the GPU submission's deadline.

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import itertools
import logging
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Origin

from poolwarden.bridge.pending import PendingRequests

# Named apart from the error WorkerDisconnected, which this module raises.
from poolwarden.bridge.refusals import RefusalLimiter
from poolwarden.bridge_events import (
    BridgeEvent,
    ProtocolViolated,
    WorkerConnected,
    WorkerRefused,
    WorkerReported,
)
from poolwarden.bridge_events import WorkerDisconnected as WorkerLeft
from poolwarden.clock import Clock, system_clock
from poolwarden.codec import encode
from poolwarden.errors import (
    ConfigurationError,
    DeadlineExceeded,
    InvalidInput,
    ModelError,
    ProtocolError,
    UnknownModel,
    WorkerDisconnected,
)
from poolwarden.events import NewEvent
from poolwarden.protocol import (
    PROTOCOL_VERSION,
    ErrorReply,
    Hello,
    HookDone,
    Limits,
    Loaded,
    Log,
    MemoryReport,
    PageMessage,
    Pong,
    Result,
    StrikeCounter,
    Tensor,
    Unloaded,
    WireErrorKind,
    encode_binary,
    encode_command,
    encode_error,
    parse_page_message,
)

__all__ = [
    "CLOSE_BAD_HELLO",
    "CLOSE_BAD_TOKEN",
    "CLOSE_DECLARED_DEAD",
    "CLOSE_HELLO_TIMEOUT",
    "CLOSE_WORKER_LIVE",
    "BridgeServer",
    "CloseInfo",
    "EventSink",
    "WorkerConnection",
]

_Reply = TypeVar("_Reply", Loaded, Unloaded, Result, Pong, MemoryReport, HookDone)

logger = logging.getLogger("poolwarden.bridge")
page_logger = logging.getLogger("poolwarden.worker")

EventSink = Callable[[NewEvent], None]
"""Receives the bridge's events (connected, disconnected, refused, protocol violated)."""

CLOSE_BAD_HELLO = 4400
"""Refused: a malformed hello, a first message that is not a hello, an unsupported version."""
CLOSE_BAD_TOKEN = 4401
"""Refused: a wrong secret, or a worker id the pool never issued a secret for."""
CLOSE_HELLO_TIMEOUT = 4408
"""Refused: no hello within ``hello_timeout``."""
CLOSE_WORKER_LIVE = 4409
"""Refused: the worker id has a live socket, which keeps serving (no takeover). Worth retrying:
the id is free again once that socket closes or the pool declares its worker dead."""
CLOSE_DECLARED_DEAD = 4410
"""Sent to a socket the pool declared dead (:meth:`WorkerConnection.declare_dead`): a reconnect or
restart rung is under way, and the page is to wait for it rather than reconnect by itself."""

_WORKER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PAGE_FILES = {
    "/worker/": ("index.html", "text/html; charset=utf-8"),
    "/worker/index.html": ("index.html", "text/html; charset=utf-8"),
    "/worker/worker.js": ("worker.js", "text/javascript; charset=utf-8"),
}


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """How one socket of a worker ended: its close code (1006 when none was received)."""

    generation: int
    code: int
    reason: str


class WorkerConnection:
    """The logical connection to one worker id, across the sockets its page opens.

    Requests go to the socket attached now; they fail fast with
    :class:`~poolwarden.errors.WorkerDisconnected` when none is, and every request still pending
    when a socket closes fails with it too, so nothing waits forever.
    """

    def __init__(self, server: BridgeServer, worker_id: str) -> None:
        self.connection_id = worker_id
        self.hello: Hello | None = None
        self.generation = 0
        self.protocol = PROTOCOL_VERSION
        """The protocol version of the live socket (its welcome's): the lower of its hello's and ours."""
        self.last_close: CloseInfo | None = None
        self._server = server
        self._ws: ServerConnection | None = None
        self._pending: PendingRequests[PageMessage] = PendingRequests()
        # The server's one sequence: a promoted spare's socket, handed to another connection,
        # may still bring an answer to a request of the spare's, which must match nothing there.
        self._ids = server.request_ids
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return (
            f"WorkerConnection({self.connection_id!r}, generation={self.generation}, "
            f"connected={self.connected})"
        )

    @property
    def connected(self) -> bool:
        """Whether a page's socket is attached and has said hello."""
        return self._ws is not None

    @property
    def backend(self) -> str | None:
        """The backend the attached page announced (webgpu, webnn, js), if any has said hello."""
        return self.hello.backend if self.hello else None

    # --- waiting for the page -------------------------------------------------------------

    async def wait_for_hello(self, after: int | None = None, timeout: float = 10.0) -> Hello:
        """Wait for a hello newer than generation ``after`` (default: the current one).

        Read ``generation`` before starting a recovery action and pass it here, so a hello that
        arrives while the action runs is not missed. Raises DeadlineExceeded after ``timeout``.
        """
        after = self.generation if after is None else after
        await self._wait(lambda: self.generation > after and self.hello is not None, timeout, "hello")
        assert self.hello is not None
        return self.hello

    async def wait_closed(self, generation: int | None = None, timeout: float = 10.0) -> CloseInfo:
        """Wait until the socket of ``generation`` (default: the current one) has closed."""
        generation = self.generation if generation is None else generation

        def closed() -> bool:
            return self.last_close is not None and self.last_close.generation >= generation

        await self._wait(closed, timeout, "the socket to close")
        assert self.last_close is not None
        return self.last_close

    async def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    await self._changed.wait()
        except TimeoutError:
            raise DeadlineExceeded(f"worker {self.connection_id!r}: no {what} within {timeout} s") from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- requests -----------------------------------------------------------------------------

    async def load_model(
        self,
        model: str,
        kind: str | None = None,
        options: Mapping[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> Loaded:
        """Load ``model`` (a built-in ``kind``, by default the model's own name) on the page."""
        fields = {"model": model, "kind": kind or model, "options": dict(options or {})}
        return await self._request("load_model", fields, Loaded, timeout)

    async def unload_model(self, model: str, timeout: float = 10.0) -> Unloaded:
        """Unload ``model`` and release its buffers."""
        return await self._request("unload_model", {"model": model}, Unloaded, timeout)

    async def infer(self, model: str, inputs: Mapping[str, Any], timeout: float = 30.0) -> Result:
        """Run ``model`` on ``inputs`` (name -> Tensor, nested lists or numpy array).

        Raises ModelError (with the page's ``kind``: device_lost, out_of_memory, validation, ...),
        InvalidInput, UnknownModel, DeadlineExceeded or WorkerDisconnected.
        """
        tensors = [v if isinstance(v, Tensor) else Tensor.from_values(k, v) for k, v in inputs.items()]
        return await self._request("infer", {"model": model}, Result, timeout, tensors)

    async def app_ping(self, timeout: float = 2.0) -> Pong:
        """An application ping: answered only when the page's JavaScript thread (and GPU) responds.

        The page gets half the timeout as the deadline for its tiny GPU submission, so a hung GPU
        shows as ``pong.gpu == "timeout"`` rather than as a missing pong.
        """
        return await self._request("ping", {"gpu_deadline_ms": max(1, int(timeout * 500))}, Pong, timeout)

    async def memory(self, timeout: float = 5.0) -> MemoryReport:
        """Ask the page for its memory report."""
        return await self._request("memory", {}, MemoryReport, timeout)

    async def hook(self, action: str, timeout: float = 10.0, **args: Any) -> HookDone:
        """Trigger a test hook (hang, destroy_device, allocate, drop_socket); pages honour it only
        when loaded with the hooks flag."""
        return await self._request("hook", {"action": action, **args}, HookDone, timeout)

    async def protocol_ping(self, timeout: float = 2.0) -> float:
        """A WebSocket protocol ping; returns its latency in seconds.

        The browser's network stack answers it even when the page's JavaScript is hung, so it
        proves only that the socket is up (see :meth:`app_ping`).
        """
        ws = self._require_ws()
        try:
            async with asyncio.timeout(timeout):
                return await (await ws.ping())
        except TimeoutError:
            raise DeadlineExceeded(
                f"worker {self.connection_id!r}: no protocol pong in {timeout} s"
            ) from None
        except ConnectionClosed as exc:
            raise WorkerDisconnected(self.connection_id, exc.rcvd.code if exc.rcvd else 1006) from exc

    async def drop(self) -> None:
        """Cut the attached socket without a closing handshake (as a network failure would)."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()
            await ws.wait_closed()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the attached socket cleanly; the page will reconnect unless it is told otherwise."""
        ws = self._ws
        if ws is not None:
            await ws.close(code, reason)

    def declare_dead(self, reason: str = "declared dead by the pool") -> bool:
        """Let go of the attached socket: the pool no longer trusts it, and the worker id is free.

        While a socket is attached, a hello for this worker id is refused (no takeover). The
        recovery ladder's reconnect and restart rungs call this before they reload or relaunch
        the page: a hung page's socket stays open, and would otherwise keep its own new page
        out. Requests pending on the socket fail with WorkerDisconnected at once, a
        ``WorkerDisconnected`` event is recorded, and the socket is closed with
        :data:`CLOSE_DECLARED_DEAD` in the background (an unresponsive peer holds up nothing).
        A page told so does not reconnect by itself: it waits for the rung's reload.

        Returns whether a socket was attached (a closed socket has already freed the id).
        """
        ws = self._ws
        if ws is None:
            return False
        self._server._let_go(self, ws, CLOSE_DECLARED_DEAD, reason)
        return True

    def _require_ws(self) -> ServerConnection:
        if self._ws is None:
            code = self.last_close.code if self.last_close else None
            raise WorkerDisconnected(self.connection_id, code)
        return self._ws

    async def _request(
        self,
        message_type: str,
        fields: Mapping[str, Any],
        expect: type[_Reply],
        timeout: float,
        tensors: list[Tensor] | None = None,
    ) -> _Reply:
        ws = self._require_ws()
        request_id = next(self._ids)
        if tensors is not None:
            data: str | bytes = encode_binary(
                {"type": message_type, "id": request_id, **fields}, tensors, self.protocol
            )
        else:
            data = encode_command(message_type, request_id, **fields)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PageMessage] = loop.create_future()
        task = asyncio.current_task()
        assert task is not None, "a request runs in a task"
        cancelling = task.cancelling()
        pending = self._pending
        # The deadline is kept with the request, under the connection's one timer (see
        # poolwarden.bridge.pending): it cancels this task when it passes, as asyncio.timeout does.
        pending.add(loop, request_id, future, loop.time() + timeout, task)
        try:
            await ws.send(data)
            reply = await future
        except asyncio.CancelledError:
            if pending.expired(request_id) and task.uncancel() <= cancelling:
                raise DeadlineExceeded(
                    f"worker {self.connection_id!r}: no answer within {timeout} s"
                ) from None
            raise
        except ConnectionClosed as exc:
            raise WorkerDisconnected(self.connection_id, exc.rcvd.code if exc.rcvd else 1006) from exc
        finally:
            pending.discard(request_id)
            if future.done() and not future.cancelled():
                # The socket closed while the request was being sent: the send's own error is
                # raised, and the future's (the same disconnect) must not be reported as lost.
                future.exception()
        if isinstance(reply, ErrorReply):
            raise _error_from(self.connection_id, reply)
        if not isinstance(reply, expect):
            raise ProtocolError(
                f"worker {self.connection_id!r} answered request {request_id} with {type(reply).__name__}",
                WireErrorKind.MALFORMED,
            )
        return reply

    # --- driven by the server -----------------------------------------------------------------

    def _attach(self, ws: ServerConnection, hello: Hello) -> int:
        assert self._ws is None, "a live socket is never replaced"
        self._ws = ws
        self.hello = hello
        self.protocol = min(hello.protocol, PROTOCOL_VERSION)
        self.generation += 1
        self._notify()
        return self.generation

    def _detach(self, ws: ServerConnection, generation: int, code: int, reason: str) -> bool:
        if self._ws is not ws:
            return False
        self._ws = None
        self.last_close = CloseInfo(generation, code, reason)
        self._pending.fail_all(lambda: WorkerDisconnected(self.connection_id, code, reason))
        self._notify()
        return True

    def _deliver(self, message: PageMessage) -> None:
        request_id = getattr(message, "id", None)
        future = self._pending.future(request_id) if request_id is not None else None
        if future is None:
            # A late answer to a request that timed out: nobody is waiting, and that is no breach.
            logger.debug("worker %s: answer to no pending request: %r", self.connection_id, message)
        elif not future.done():
            future.set_result(message)


def _connected(worker_id: str, generation: int, hello: Hello) -> WorkerConnected:
    return WorkerConnected(
        connection_id=worker_id,
        browser=hello.browser,
        generation=generation,
        instance=hello.instance,
        backend=hello.backend,
        user_agent=hello.user_agent,
        fallback_adapter=hello.is_fallback_adapter,
        webnn=hello.webnn_available,
    )


@dataclasses.dataclass(slots=True)
class _Binding:
    """Which worker id's connection a socket serves now (and its generation and hello there)."""

    conn: WorkerConnection
    generation: int
    hello: Hello


def _error_from(connection_id: str, reply: ErrorReply) -> Exception:
    text = f"worker {connection_id!r}: {reply.kind}: {reply.message}"
    if reply.kind == WireErrorKind.INPUT:
        return InvalidInput(text)
    if reply.kind == WireErrorKind.UNKNOWN_MODEL:
        return UnknownModel(text)
    if reply.kind == WireErrorKind.TIMEOUT:
        return DeadlineExceeded(text)
    return ModelError(text, reply.kind)


class BridgeServer:
    """Serves worker pages and their WebSockets on one loopback port (see the module docstring).

    Use as ``async with BridgeServer() as server:``; ``server.page_url(worker_id)`` is the URL a
    browser opens, ``server.worker(worker_id)`` the connection to await on.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        limits: Limits | None = None,
        strike_limit: int = 5,
        hello_timeout: float = 10.0,
        on_event: EventSink | None = None,
        clock: Clock = system_clock,
        refusals: RefusalLimiter | None = None,
    ) -> None:
        self.host = host
        self.token = token or secrets.token_urlsafe(24)
        self.limits = limits or Limits()
        self.strike_limit = strike_limit
        self.hello_timeout = hello_timeout
        self._requested_port = port
        self._on_event = on_event
        self._clock = clock
        self.refusals = refusals or RefusalLimiter()
        """Counts every refusal (``refusals.totals``) and decides which are written to the log."""
        self._server: Server | None = None
        self._workers: dict[str, WorkerConnection] = {}
        self.request_ids = itertools.count(1)
        """Request ids, unique across the server's connections (see ``WorkerConnection``)."""
        self._files: dict[str, bytes] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._bindings: dict[ServerConnection, _Binding] = {}
        self.port = 0

    async def __aenter__(self) -> BridgeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def origin(self) -> str:
        """The only Origin whose WebSocket handshakes are accepted: the page's own."""
        return f"http://{self.host}:{self.port}"

    def secret_for(self, worker_id: str) -> str:
        """Issue ``worker_id`` and return the secret its page presents in its hello.

        HMAC-SHA256 of the worker id under the server's key, so it admits that worker id and no
        other. Issuing makes the id one of the pool's (as :meth:`worker` does): a hello for an id
        never issued is refused whatever secret it carries.
        """
        self.worker(worker_id)
        return self._secret(worker_id)

    def _secret(self, worker_id: str) -> str:
        digest = hmac.new(self.token.encode(), _check_worker_id(worker_id).encode(), hashlib.sha256)
        return digest.hexdigest()

    def page_url(self, worker_id: str, *, hooks: bool = False, with_secret: bool = False) -> str:
        """The URL of the worker page for ``worker_id`` (``hooks`` enables test hooks).

        It holds no secret unless ``with_secret``: a URL shows up on command lines and in the
        browser's target lists, so the workers hand the secret over their remote-control session
        instead; ``with_secret`` is for a browser driven with no session at all (Firefox by
        default, whose start page is written in its owner-only profile, never on a command line).
        """
        query = {"worker": _check_worker_id(worker_id)}
        if with_secret:
            query["token"] = self.secret_for(worker_id)
        if hooks:
            query["hooks"] = "1"
        return f"{self.origin}/worker/?{urlencode(query)}"

    def ws_url(self, worker_id: str) -> str:
        """The WebSocket URL a worker (page or simulated) connects to."""
        return f"ws://{self.host}:{self.port}/ws?{urlencode({'worker': _check_worker_id(worker_id)})}"

    def worker(self, worker_id: str) -> WorkerConnection:
        """The logical connection of ``worker_id`` (created on first use, before any page connects).

        Only the pool calls this: it is what makes a worker id one of the pool's.
        """
        conn = self._workers.get(worker_id)
        if conn is None:
            conn = self._workers[_check_worker_id(worker_id)] = WorkerConnection(self, worker_id)
        return conn

    def forget(self, worker_id: str) -> None:
        """Withdraw ``worker_id`` (if issued): declare its worker dead and drop its connection.

        Its secret then admits nothing (a hello for it is refused as for an id never issued), and
        the table of worker ids holds only the pool's current ones: the pool forgets the id of a
        connection it has replaced, so a long-running pool's table does not grow with each
        replacement.
        """
        conn = self._workers.pop(worker_id, None)
        if conn is not None:
            conn.declare_dead("forgotten by the pool")

    @property
    def workers(self) -> Mapping[str, WorkerConnection]:
        """Every worker id the pool asked for (never one a peer named), with its connection."""
        return dict(self._workers)

    async def start(self) -> None:
        """Bind the port (127.0.0.1 and an ephemeral port by default) and start serving."""
        if self._server is not None:
            return
        self._files = await asyncio.to_thread(_read_page_files)
        # Bind first so the port, and so the one allowed Origin, is known before serving.
        # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on sockets whose proto says
        # TCP, and accepted sockets inherit it. With Nagle on, a small frame written right after
        # another (the welcome, then the first request) waited for the page's delayed ACK: 40 ms.
        sock = socket.socket(
            socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(f"cannot bind {self.host}:{self._requested_port}: {exc}") from exc
        self.port = sock.getsockname()[1]
        self._server = await serve(
            self._handle,
            sock=sock,
            origins=[Origin(self.origin)],
            process_request=self._process_request,
            process_response=self._process_response,
            max_size=self.limits.max_frame_bytes,
            compression=None,  # float32 tensors do not compress; deflate would only cost CPU
            server_header=None,
        )

    async def close(self) -> None:
        """Close every socket (code 1001) and stop listening."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        await server.wait_closed()
        if self._closing:
            await asyncio.wait(self._closing)

    # --- HTTP ------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        host = request.headers.get("Host", "")
        if host != f"{self.host}:{self.port}":
            # DNS rebinding: a foreign site whose name now resolves to 127.0.0.1 still sends its
            # own name as Host. Only the address the pages are given is served.
            self._emit(WorkerRefused(connection_id=None, error_kind="foreign_host", host=host))
            return _response(421, b"misdirected request", "text/plain")
        if url.path == "/ws":
            worker = parse_qs(url.query).get("worker", [""])[0]
            if not _WORKER_ID.fullmatch(worker):
                self._emit(WorkerRefused(connection_id=None, error_kind="bad_worker_id", path=url.path))
                return _response(400, b"a worker id is required", "text/plain")
            return None
        entry = _PAGE_FILES.get(url.path)
        if entry is None:
            return _response(404, b"not found", "text/plain")
        return _response(200, self._files[entry[0]], entry[1])

    def _process_response(self, connection: ServerConnection, request: Request, response: Response) -> None:
        if urlsplit(request.path).path == "/ws" and response.status_code == 403:
            origin = request.headers.get("Origin")
            self._emit(WorkerRefused(connection_id=None, error_kind="foreign_origin", origin=origin))

    # --- WebSocket -------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        worker_id = parse_qs(urlsplit(ws.request.path if ws.request else "").query)["worker"][0]
        hello = await self._receive_hello(ws, worker_id)
        if hello is None:
            return
        conn = self._workers[worker_id]  # _receive_hello admits issued worker ids only
        if conn.connected:
            # No takeover: the live socket keeps serving. Checked after the secret (so an
            # unauthenticated peer learns nothing about which ids are live) and with no await
            # between it and the attach below, so two hellos cannot both get in.
            await self._refuse(
                ws,
                worker_id,
                CLOSE_WORKER_LIVE,
                WireErrorKind.WORKER_LIVE,
                "worker id is live",
                "worker id is live",
            )
            return
        generation = conn._attach(ws, hello)
        # Mutable: a spare's socket is handed to another worker id by adopt() while it serves.
        binding = self._bindings[ws] = _Binding(conn, generation, hello)
        self._emit(_connected(worker_id, generation, hello))
        welcome = encode_command(
            "welcome", None, protocol=conn.protocol, worker_id=worker_id, generation=generation
        )
        try:
            await ws.send(welcome)
            await self._receive_loop(ws, binding)
        except ConnectionClosed:
            pass  # how it closed is read from the socket just below
        finally:
            self._bindings.pop(ws, None)
            code, reason = _close_of(ws)
            conn, generation, hello = binding.conn, binding.generation, binding.hello
            if conn._detach(ws, generation, code, reason):
                self._emit(
                    WorkerLeft(
                        connection_id=conn.connection_id,
                        browser=hello.browser,
                        generation=generation,
                        code=code,
                        reason=reason,
                    )
                )

    async def adopt(self, worker_id: str, spare_id: str) -> Hello:
        """Hand the live socket of ``spare_id`` (a warm spare's page) to ``worker_id``; return its hello.

        The page is told its new worker id and that id's secret (a ``rebind`` message, before any
        request of its new owner), so that it reconnects as ``worker_id`` from now on; then the
        socket is attached to ``worker_id``'s connection as a new generation (``WorkerConnected``)
        and ``spare_id`` is withdrawn, as :meth:`forget` does. ``worker_id`` must have no socket
        attached (the restart rung declared its old page dead first).
        """
        spare = self._workers.get(spare_id)
        ws = spare._ws if spare is not None else None
        binding = self._bindings.get(ws) if ws is not None else None
        if spare is None or ws is None or binding is None or binding.conn is not spare:
            raise WorkerDisconnected(spare_id, spare.last_close.code if spare and spare.last_close else None)
        target = self.worker(worker_id)
        if target.connected:
            raise ProtocolError(f"worker id {worker_id!r} is live", WireErrorKind.WORKER_LIVE)
        rebind = encode_command(
            "rebind",
            None,
            worker_id=worker_id,
            token=self._secret(worker_id),
            generation=target.generation + 1,
        )
        await ws.send(rebind)
        if spare._ws is not ws or target.connected:  # closed, or taken, while the message went out
            raise WorkerDisconnected(spare_id, None)
        spare._ws = None
        # The spare's own requests still waiting will get no answer through it any more.
        spare._pending.fail_all(lambda: WorkerDisconnected(spare_id, None))
        spare._notify()
        self._workers.pop(spare_id, None)
        hello = dataclasses.replace(binding.hello, worker_id=worker_id)
        generation = target._attach(ws, hello)
        binding.conn, binding.generation, binding.hello = target, generation, hello
        self._emit(_connected(worker_id, generation, hello))
        return hello

    async def _receive_hello(self, ws: ServerConnection, worker_id: str) -> Hello | None:
        try:
            async with asyncio.timeout(self.hello_timeout):
                frame = await ws.recv()
        except TimeoutError:
            # Recorded (or counted) before the close: whoever sees the close finds it counted.
            self._emit(WorkerRefused(connection_id=worker_id, error_kind="hello_timeout"))
            await ws.close(CLOSE_HELLO_TIMEOUT, "no hello in time")
            return None
        except ConnectionClosed:
            return None
        try:
            message = parse_page_message(frame, self.limits)
            if not isinstance(message, Hello):
                raise ProtocolError("the first message must be a hello", WireErrorKind.NOT_READY)
            if message.worker_id != worker_id:
                raise ProtocolError(
                    f"hello names worker {message.worker_id!r}, the URL {worker_id!r}",
                    WireErrorKind.MALFORMED,
                )
            if worker_id not in self._workers:
                # Worker ids are the pool's: whatever the peer presents, an id the pool never
                # asked for gets no entry in any table.
                raise ProtocolError("no secret was issued for this worker id", WireErrorKind.BAD_TOKEN)
            if not hmac.compare_digest(message.token.encode(), self._secret(worker_id).encode()):
                raise ProtocolError("wrong token", WireErrorKind.BAD_TOKEN)
        except ProtocolError as exc:
            code = CLOSE_BAD_TOKEN if exc.kind == WireErrorKind.BAD_TOKEN else CLOSE_BAD_HELLO
            await self._refuse(ws, worker_id, code, exc.kind, str(exc))
            return None
        return message

    async def _refuse(
        self,
        ws: ServerConnection,
        worker_id: str,
        code: int,
        kind: str,
        detail: str,
        reason: str | None = None,
    ) -> None:
        """Record (or count) a refused hello, tell the peer why, and close with ``code`` and
        ``reason`` (by default the kind)."""
        # Recorded (or counted) before the close: whoever sees the close finds it counted.
        self._emit(WorkerRefused(connection_id=worker_id, error_kind=str(kind), detail=detail))
        with contextlib.suppress(ConnectionClosed):  # the peer may already be gone; we close anyway
            await ws.send(encode_error(None, kind, detail))
        await ws.close(code, str(kind) if reason is None else reason)

    def _let_go(self, conn: WorkerConnection, ws: ServerConnection, code: int, reason: str) -> None:
        """Detach ``ws`` from ``conn`` now and close it in the background (declare_dead)."""
        generation, hello = conn.generation, conn.hello
        assert hello is not None, "a socket is attached only after its hello"
        if not conn._detach(ws, generation, code, reason):
            return
        self._emit(
            WorkerLeft(
                connection_id=conn.connection_id,
                browser=hello.browser,
                generation=generation,
                code=code,
                reason=reason,
            )
        )
        # In the background: a hung peer, which never answers the close, holds up nothing.
        closing = asyncio.create_task(ws.close(code, reason), name=f"close {conn.connection_id}")
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def _receive_loop(self, ws: ServerConnection, binding: _Binding) -> None:
        strikes = StrikeCounter(self.strike_limit)
        async for frame in ws:
            conn = binding.conn
            try:
                message = parse_page_message(frame, self.limits)
                if isinstance(message, Hello):
                    raise ProtocolError("hello sent twice on one connection", WireErrorKind.MALFORMED)
            except ProtocolError as exc:
                exhausted = strikes.strike()
                self._emit(
                    ProtocolViolated(
                        connection_id=conn.connection_id,
                        error_kind=str(exc.kind),
                        detail=str(exc),
                        strikes=strikes.strikes,
                    )
                )
                await ws.send(encode_error(None, exc.kind, str(exc), strikes=strikes.strikes))
                if exhausted:
                    await ws.close(1008, "too many protocol errors")
                    return
                continue
            if message.__class__ is Result:  # the common case, asked first
                conn._deliver(message)
            elif isinstance(message, Log):
                page_logger.log(
                    _LOG_LEVELS.get(message.level, logging.INFO),
                    "%s: %s",
                    conn.connection_id,
                    message.message,
                )
            elif isinstance(message, ErrorReply) and message.id is None:
                self._emit(
                    WorkerReported(
                        connection_id=conn.connection_id, error_kind=message.kind, detail=message.message
                    )
                )
            else:
                conn._deliver(message)

    def _emit(self, event: BridgeEvent) -> None:
        """Hand ``event`` to the sink, stored as :mod:`poolwarden.codec` stores it, at the bridge's clock.

        Refusals go through :attr:`refusals` first: past a burst of one kind, they are counted,
        not written, so that a flood of refused sockets cannot fill the log.
        """
        now = self._clock()
        if isinstance(event, WorkerRefused):
            held = self.refusals.admit(event.error_kind, now)
            if held is None:
                return
            if held:
                event = dataclasses.replace(event, suppressed=held)
        if self._on_event is None:
            return
        try:
            self._on_event(encode(event, now))
        except Exception:
            # A failing sink must not take a worker's connection down with it; it is logged loudly.
            logger.exception("the bridge's event sink failed on %s", event.TYPE)


_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def _close_of(ws: ServerConnection) -> tuple[int, str]:
    # The peer's close frame if one came; else the one we sent (1008 abuse, 1009 too big); else
    # 1006, the peer vanished.
    frame = ws.protocol.close_rcvd or ws.protocol.close_sent
    return (int(frame.code), frame.reason) if frame is not None else (1006, "")


def _check_worker_id(worker_id: str) -> str:
    if not _WORKER_ID.fullmatch(worker_id):
        raise ConfigurationError(f"worker id {worker_id!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    return worker_id


def _read_page_files() -> dict[str, bytes]:
    root = resources.files("poolwarden.worker_page")
    return {name: (root / name).read_bytes() for name in ("index.html", "worker.js")}


def _response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Date", formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            # Cross-origin isolation: the page gets SharedArrayBuffer and precise timers, and
            # nothing from another origin can be embedded in it.
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cross-Origin-Embedder-Policy", "require-corp"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 421: "Misdirected Request"}.get(status, "")
    return Response(status, reason, headers, body)
