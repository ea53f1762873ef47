"""A worker in Python that speaks exactly the page's protocol, with faults on demand.

It sends the same hello, answers the same commands with the same binary tensor frames, and
computes the built-in models with numpy (:mod:`poolwarden.workers.models`), so everything above the
bridge (the pool, the breakers, the recovery ladder) runs against it unchanged and fast. Like the
page, it handles one message at a time (a page has one JavaScript thread), reconnects with backoff
when its socket drops, and honours test hooks.

Faults (:class:`Fault`), injected with :meth:`SimulatedWorker.inject`:

- ``hang``: stop handling messages for ``seconds`` (WebSocket pings are still answered, as a hung
  page's network stack does);
- ``drop``: cut the socket without a close frame, then reconnect;
- ``crash``: cut the socket and stay down until :meth:`~SimulatedWorker.restart`;
- ``slow``: add ``seconds`` to each of the next ``count`` inferences;
- ``out_of_memory``, ``device_lost``: fail the next ``count`` inferences with that kind (device
  loss is also reported unprompted, and the device is "recreated" afterwards, as the page does);
- ``garbage``: answer the next request with bytes that are not a message;
- ``oversized``: send a frame of ``size`` bytes.

With ``echo=True`` the worker answers each inference with precomputed bytes: the first request for
a model and input shape is computed (numpy) and its result frame kept, and every later one gets
that frame with its own request id written in (:class:`FrameTemplate`), so that a benchmark can tell
the pool's costs from the worker's (``poolwarden bench pool``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from poolwarden.bridge.server import CLOSE_BAD_HELLO, CLOSE_BAD_TOKEN, CLOSE_DECLARED_DEAD
from poolwarden.errors import InvalidInput, PoolwardenError, ProtocolError, UnknownModel
from poolwarden.protocol import (
    PROTOCOL_VERSION,
    Command,
    Limits,
    Tensor,
    WireErrorKind,
    encode_binary,
    encode_error,
    parse_command,
)
from poolwarden.workers.models import ModelSpec, reference_forward, resolve_model

if TYPE_CHECKING:
    from poolwarden.bridge.server import BridgeServer

__all__ = ["TERMINAL_CLOSE_CODES", "Fault", "FrameTemplate", "SimulatedWorker"]

logger = logging.getLogger("poolwarden.workers.simulated")

TERMINAL_CLOSE_CODES = frozenset({1008, CLOSE_BAD_HELLO, CLOSE_BAD_TOKEN, CLOSE_DECLARED_DEAD})
"""Close codes after which a worker stops reconnecting: it was refused for good, or the pool
declared it dead (4410) and will reload or restart it. A refusal because the worker id is live
(4409) is retried with backoff: the id is free once that socket closes."""

USER_AGENT = "poolwarden-simulated/1"

_ID_WIDTH = 16
_ID_SENTINEL = 10**15  # 16 digits, as wide as the largest id (2**53 - 1)
_ID = struct.Struct("<Q")


class FrameTemplate:
    """A tensor frame for ``header`` and ``tensors`` in which only the request id changes:
    ``template(request_id)`` is the frame for that id, no byte but the id's rewritten.

    In version 2 the id is a fixed uint64; in version 1 it goes into the JSON header right-aligned
    in 16 characters (JSON allows the spaces), so every id gives a frame of the same length.
    """

    __slots__ = ("prefix", "suffix", "version")

    def __init__(self, header: Mapping[str, Any], tensors: list[Tensor], version: int = 1) -> None:
        self.version = version
        frame = encode_binary({**header, "id": _ID_SENTINEL}, tensors, version)
        if version >= 2:
            self.prefix, self.suffix = frame[:8], frame[16:]
            return
        at = frame.index(b'"id":' + str(_ID_SENTINEL).encode()) + len(b'"id":')
        self.prefix, self.suffix = frame[:at], frame[at + _ID_WIDTH :]

    def __call__(self, request_id: int) -> bytes:
        if self.version >= 2:
            return b"%s%s%s" % (self.prefix, _ID.pack(request_id), self.suffix)
        return b"%s%s%s" % (self.prefix, str(request_id).rjust(_ID_WIDTH).encode(), self.suffix)


class Fault(StrEnum):
    """The faults a simulated worker can be told to show."""

    HANG = "hang"
    DROP = "drop"
    CRASH = "crash"
    SLOW = "slow"
    OUT_OF_MEMORY = "out_of_memory"
    DEVICE_LOST = "device_lost"
    GARBAGE = "garbage"
    OVERSIZED = "oversized"


@dataclass(slots=True)
class _Pending:
    fault: Fault
    count: int
    seconds: float
    size: int


class SimulatedWorker:
    """A simulated worker page for ``worker_id``, connecting to ``ws_url`` with ``token``.

    ``origin`` is sent as the handshake's Origin header, as a browser would send its page's.
    """

    def __init__(
        self,
        ws_url: str,
        token: str,
        worker_id: str,
        *,
        origin: str | None = None,
        hooks: bool = True,
        protocol: int = PROTOCOL_VERSION,
        limits: Limits | None = None,
        backoff: tuple[float, float] = (0.05, 2.0),
        echo: bool = False,
    ) -> None:
        self.ws_url = ws_url
        self.token = token
        self.worker_id = worker_id
        self.origin = origin
        self.hooks = hooks
        self.protocol = protocol
        self.limits = limits or Limits()
        self.backoff = backoff
        self.echo = echo
        self._replies: dict[tuple[str, tuple[int, ...]], FrameTemplate] = {}
        self.instance = ""
        self.last_close_code: int | None = None
        self.connects = 0
        self._models: dict[str, ModelSpec] = {}
        self._faults: list[_Pending] = []
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._hung_until = 0.0
        self._allocations: list[bytearray] = []
        self._welcomed = False
        self._frames = 1  # the version of tensor frames: the welcome's

    @classmethod
    def for_server(cls, server: BridgeServer, worker_id: str, **kwargs: Any) -> SimulatedWorker:
        """A worker for a :class:`~poolwarden.bridge.server.BridgeServer`'s URL, its worker id's
        secret and the server's Origin."""
        secret = server.secret_for(worker_id)
        return cls(server.ws_url(worker_id), secret, worker_id, origin=server.origin, **kwargs)

    @property
    def running(self) -> bool:
        """Whether the worker is up (connected or reconnecting), as a live browser page would be."""
        return self._task is not None and not self._task.done()

    @property
    def models(self) -> tuple[str, ...]:
        """The models loaded now (a reload or restart loses them, as a page does)."""
        return tuple(self._models)

    async def start(self) -> None:
        """Start the worker: it connects, says hello and serves until stopped or crashed."""
        if self.running:
            return
        self.instance = secrets.token_hex(8)
        self._models.clear()
        self._replies.clear()
        self._task = asyncio.create_task(self._run(), name=f"simulated-worker-{self.worker_id}")

    async def wait_stopped(self) -> None:
        """Wait until the worker is down: stopped, crashed, or refused for good."""
        task = self._task
        if task is not None:
            await asyncio.wait([task])

    async def stop(self) -> None:
        """Stop the worker, closing its socket cleanly (code 1001, as a closing page does)."""
        task, self._task = self._task, None
        if task is None:
            return
        ws = self._ws
        if ws is not None:
            await ws.close(1001, "worker stopped")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # a cancellation of stop() itself goes on

    async def restart(self) -> None:
        """Stop (if running) and start afresh: a new instance with no models."""
        await self.stop()
        self._faults.clear()
        self._allocations.clear()
        self._hung_until = 0.0
        await self.start()

    async def reload(self) -> None:
        """Behave as a reloaded page: close with 1001, forget the models, reconnect as a new instance."""
        await self.restart()

    async def inject(
        self, fault: Fault | str, *, count: int = 1, seconds: float = 1.0, size: int = 0
    ) -> None:
        """Arrange for ``fault`` to happen (see the module docstring for what each one does)."""
        fault = Fault(fault)
        if fault is Fault.HANG:
            self._hung_until = time.monotonic() + seconds
        elif fault in (Fault.DROP, Fault.CRASH):
            ws = self._ws
            if fault is Fault.CRASH and self._task is not None:
                self._task.cancel()
            if ws is not None:
                ws.transport.abort()
        elif fault is Fault.OVERSIZED:
            ws = self._ws
            if ws is not None:
                with contextlib.suppress(ConnectionClosed):  # an oversized frame may get the socket closed
                    await ws.send("x" * size)
        else:
            self._faults.append(_Pending(fault, count, seconds, size))

    def _rebind(self, worker_id: str, token: str) -> None:
        """Promoted (as a warm spare's page is): reconnect as ``worker_id`` with ``token`` from now on."""
        parts = urlsplit(self.ws_url)
        query = urlencode({**dict(parse_qsl(parts.query)), "worker": worker_id})
        self.ws_url = urlunsplit(parts._replace(query=query))
        self.worker_id, self.token = worker_id, token

    # --- the connection loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.backoff[0]
        while True:
            try:
                async with connect(
                    self.ws_url,
                    origin=self.origin,  # type: ignore[arg-type]
                    max_size=self.limits.max_frame_bytes,
                    compression=None,
                    open_timeout=5,
                    user_agent_header=USER_AGENT,
                ) as ws:
                    self._ws = ws
                    self._welcomed = False
                    self.connects += 1
                    await ws.send(self._hello())
                    await self._serve(ws)
            except ConnectionClosed:
                pass  # the close code is read below
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                logger.info("simulated worker %s: cannot connect: %s", self.worker_id, exc)
            finally:
                if self._ws is not None:
                    self.last_close_code = self._ws.close_code
                self._ws = None
            if self._welcomed:
                delay = self.backoff[0]  # it was served: a fresh drop is retried at once
                self._welcomed = False
            if self.last_close_code in TERMINAL_CLOSE_CODES:
                # Declared dead is the pool's own doing (a rung under way); a refusal is not.
                level = logging.INFO if self.last_close_code == CLOSE_DECLARED_DEAD else logging.WARNING
                logger.log(
                    level,
                    "simulated worker %s closed (%s); not reconnecting",
                    self.worker_id,
                    self.last_close_code,
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    def _hello(self) -> str:
        return json.dumps(
            {
                "type": "hello",
                "protocol": self.protocol,
                "token": self.token,
                "worker_id": self.worker_id,
                "instance": self.instance,
                "browser": {"name": "simulated", "version": "1", "user_agent": USER_AGENT},
                "backend": "simulated",
                "capabilities": {
                    "backends": ["simulated"],
                    "webgpu": {"available": False, "reason": "simulated worker"},
                    "webnn": {"available": False, "reason": "simulated worker"},
                    "cross_origin_isolated": False,
                },
                "hooks": self.hooks,
            }
        )

    async def _serve(self, ws: ClientConnection) -> None:
        # Like the page's async handlers: a slow inference does not stop the next message (or the
        # socket's close) from being seen; only a hang stops everything.
        handlers: set[asyncio.Task[None]] = set()
        try:
            async for frame in ws:
                hang = self._hung_until - time.monotonic()
                if hang > 0:
                    await asyncio.sleep(hang)  # a hung page handles nothing until it is free again
                try:
                    command = parse_command(frame, self.limits)
                except ProtocolError as exc:
                    await ws.send(encode_error(None, exc.kind, str(exc)))
                    continue
                task = asyncio.create_task(self._handle_until_closed(ws, command))
                handlers.add(task)
                task.add_done_callback(handlers.discard)
        finally:
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    async def _handle_until_closed(self, ws: ClientConnection, command: Command) -> None:
        # A socket that goes away mid-answer is no error of the handler: the connection loop sees
        # the close too, and reconnects.
        with contextlib.suppress(ConnectionClosed):
            await self._handle(ws, command)

    async def _handle(self, ws: ClientConnection, command: Command) -> None:
        request_id, fields = command.id, command.fields
        if self._take(Fault.GARBAGE) is not None and command.type not in ("welcome", "error"):
            await ws.send(b"\x00garbage\xff")
            return
        try:
            if command.type in ("welcome", "rebind", "error"):
                if command.type == "welcome":
                    self._welcomed = True
                    self._frames = int(fields.get("protocol", 1))
                elif command.type == "rebind":
                    self._rebind(str(fields["worker_id"]), str(fields["token"]))
                else:
                    logger.info("simulated worker %s told: %s", self.worker_id, fields.get("message"))
                return
            if command.type == "load_model":
                spec = resolve_model(str(fields.get("kind")), fields.get("options") or {})
                self._models[str(fields["model"])] = spec
                await ws.send(
                    _json(
                        type="loaded",
                        id=request_id,
                        model=fields["model"],
                        backend="simulated",
                        elapsed_ms=0.0,
                    )
                )
            elif command.type == "unload_model":
                self._models.pop(str(fields.get("model")), None)
                await ws.send(_json(type="unloaded", id=request_id, model=fields.get("model")))
            elif command.type == "infer":
                await self._infer(ws, command)
            elif command.type == "ping":
                await ws.send(
                    _json(type="pong", id=request_id, backend="simulated", gpu="none", elapsed_ms=0.0)
                )
            elif command.type == "memory":
                await ws.send(
                    _json(
                        type="memory",
                        id=request_id,
                        js_heap_used=None,
                        js_heap_total=None,
                        gpu_buffer_bytes=0,
                        test_allocated_bytes=sum(len(b) for b in self._allocations),
                        models=list(self._models),
                    )
                )
            elif command.type == "hook":
                await self._hook(ws, request_id, str(fields.get("action")), fields)
        except UnknownModel as exc:
            await ws.send(encode_error(request_id, WireErrorKind.UNKNOWN_MODEL, str(exc)))
        except InvalidInput as exc:
            await ws.send(encode_error(request_id, WireErrorKind.INPUT, str(exc)))
        except PoolwardenError as exc:
            await ws.send(encode_error(request_id, WireErrorKind.INTERNAL, str(exc)))

    async def _infer(self, ws: ClientConnection, command: Command) -> None:
        started = time.perf_counter()
        model = str(command.fields["model"])
        slow = self._take(Fault.SLOW)
        if slow is not None:
            await asyncio.sleep(slow.seconds)
        for kind in (Fault.OUT_OF_MEMORY, Fault.DEVICE_LOST):
            if self._take(kind) is not None:
                if kind is Fault.DEVICE_LOST:
                    await ws.send(
                        encode_error(
                            None, WireErrorKind.DEVICE_LOST, "simulated device loss; device recreated"
                        )
                    )
                await ws.send(encode_error(command.id, kind.value, f"simulated {kind.value}"))
                return
        spec = self._models.get(model)
        if spec is None:
            raise UnknownModel(f"model {model!r} is not loaded")
        inputs = {t.name: t for t in command.tensors}
        if set(inputs) != {"input"}:
            raise InvalidInput(f"{model}: expects one tensor named 'input', got {sorted(inputs)}")
        if self.echo:
            key = (model, inputs["input"].shape)
            reply = self._replies.get(key)
            if reply is not None and command.id is not None:
                await ws.send(reply(command.id))
                return
        output = reference_forward(spec, inputs["input"].to_numpy())
        header = {
            "type": "result",
            "id": command.id,
            "model": model,
            "backend": "simulated",
            "elapsed_ms": (time.perf_counter() - started) * 1000,
        }
        if self.echo:
            header["elapsed_ms"] = 0.0
            self._replies[(model, inputs["input"].shape)] = FrameTemplate(
                header, [Tensor.from_values("output", output)], self._frames
            )
        await ws.send(encode_binary(header, [Tensor.from_values("output", output)], self._frames))

    async def _hook(
        self, ws: ClientConnection, request_id: int | None, action: str, fields: Mapping[str, Any]
    ) -> None:
        if not self.hooks:
            await ws.send(encode_error(request_id, WireErrorKind.UNSUPPORTED, "test hooks are not enabled"))
            return
        if action not in ("hang", "destroy_device", "allocate", "drop_socket"):
            await ws.send(encode_error(request_id, WireErrorKind.UNSUPPORTED, f"no test hook {action!r}"))
            return
        await ws.send(_json(type="hook_done", id=request_id, action=action))
        if action == "hang":
            await self.inject(Fault.HANG, seconds=float(fields.get("seconds", 5.0)))
        elif action == "destroy_device":
            # As the page does: the loss is reported at once and the device recreated, so only an
            # inference running at that moment would fail.
            await ws.send(
                encode_error(None, WireErrorKind.DEVICE_LOST, "simulated device destroyed; recreated")
            )
        elif action == "drop_socket":
            await self.inject(Fault.DROP)
        elif action == "allocate":
            # Really held (and touched, like the page's), so process memory grows as it would.
            self._allocations.append(bytearray(b"\x01") * int(float(fields.get("mb", 1)) * 1024 * 1024))

    def _take(self, fault: Fault) -> _Pending | None:
        for pending in self._faults:
            if pending.fault is fault:
                pending.count -= 1
                if pending.count <= 0:
                    self._faults.remove(pending)
                return pending
        return None


def _json(**fields: Any) -> str:
    return json.dumps(fields, separators=(",", ":"))
