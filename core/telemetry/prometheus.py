"""Prometheus exposition of the pool's telemetry: the figures of ``export_telemetry``, scrapeable.

Optional: it needs ``prometheus_client`` (``pip install 'poolwarden[prometheus]'``); without it,
using this module raises :class:`~poolwarden.errors.ConfigurationError`, and importing poolwarden
never needs it.

prometheus_client calls a collector from its own HTTP thread, and the pool's state belongs to its
event loop. So the collector never reads the pool: it serves the last :class:`MetricsSnapshot`,
and :meth:`PoolMetrics.refresh`, awaited on the pool's loop (by hand, or every ``interval``
seconds by the task :meth:`PoolMetrics.start` runs), computes the next one from the same counts
and live state as ``export_telemetry``. ``metrics_from_log`` does the same for a log alone.

.. code-block:: python

    metrics = await PoolMetrics(pool).start(interval=15.0)
    port = metrics.serve(port=9464)          # loopback unless addr says otherwise
    ...
    await metrics.stop()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from poolwarden.clock import Clock, system_clock
from poolwarden.errors import ConfigurationError, PoolwardenError
from poolwarden.telemetry.from_log import log_telemetry, read_log
from poolwarden.telemetry.live import PoolView, build_telemetry, pool_health, read_figures
from poolwarden.telemetry.snapshot import MetricsSnapshot

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from poolwarden.telemetry.prometheus_families import SnapshotCollector

__all__ = ["HEALTH_TIMEOUT", "MetricsSnapshot", "PoolMetrics", "metrics_from_log", "snapshot_of_pool"]

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT = 2.0
"""Seconds a health request waits for the pool's event loop before it says the pool is not live."""

_Start = Callable[[str, list[tuple[str, str]]], object]


class _App:
    """The WSGI app: prometheus_client's ``/metrics``, and the health endpoints read on the pool's loop."""

    def __init__(self, registry: CollectorRegistry, pool: PoolView, loop: asyncio.AbstractEventLoop) -> None:
        from prometheus_client import make_wsgi_app

        self._metrics = make_wsgi_app(registry)
        self._pool = pool
        self._loop = loop

    def __call__(self, environ: dict[str, Any], start_response: _Start) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path not in ("/livez", "/readyz", "/healthz"):
            answer: Iterable[bytes] = self._metrics(environ, start_response)
            return answer
        status, body = self._health(path)
        data = (json.dumps(body) + "\n").encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def _health(self, path: str) -> tuple[str, dict[str, Any]]:
        async def read() -> dict[str, Any]:
            return pool_health(self._pool)

        try:
            future = asyncio.run_coroutine_threadsafe(read(), self._loop)
        except RuntimeError:  # the loop is closed
            return "503 Service Unavailable", {"live": False, "reason": "the pool's event loop is closed"}
        try:
            health = future.result(timeout=HEALTH_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            why = f"the pool's event loop did not answer within {HEALTH_TIMEOUT:g} s"
            return "503 Service Unavailable", {"live": False, "reason": why}
        except Exception as error:  # a pool closing under the request
            return "503 Service Unavailable", {"live": False, "reason": f"{type(error).__name__}: {error}"}
        if path == "/livez":
            return "200 OK", {"live": True}
        return ("200 OK" if health["ready"] else "503 Service Unavailable"), {"live": True, **health}


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass


def _start_server(addr: str, port: int, app: _App) -> WSGIServer:
    server = make_server(addr, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="poolwarden-metrics-http", daemon=True).start()
    return server


def _new_collector() -> SnapshotCollector:
    """A collector of snapshots; a typed error when prometheus_client is not installed."""
    try:
        families = importlib.import_module("poolwarden.telemetry.prometheus_families")
    except ImportError as error:
        if (error.name or "").partition(".")[0] != "prometheus_client":
            raise  # a broken install of something else is not a missing option
        raise ConfigurationError(
            "Prometheus exposition needs prometheus_client: pip install 'poolwarden[prometheus]'"
        ) from error
    collector: SnapshotCollector = families.SnapshotCollector()
    return collector


def _registry(collector: SnapshotCollector) -> CollectorRegistry:
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry()  # private: the process-wide default registry is the application's
    registry.register(collector)
    return registry


def _text(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode("utf-8")


async def snapshot_of_pool(pool: PoolView, clock: Clock = system_clock) -> MetricsSnapshot:
    """The pool's figures now, as ``export_telemetry`` counts them (run it on the pool's loop)."""
    counts, system = await read_figures(pool)
    telemetry = build_telemetry(pool, counts, system, include_connections=False, include_models=False)
    breakers = tuple(sorted((b.key, str(b.state)) for b in pool.registry))
    return MetricsSnapshot(clock(), telemetry, counts, breakers)


async def metrics_from_log(db: str | os.PathLike[str], *, pool: str | None = None) -> str:
    """The Prometheus text exposition of the log at ``db`` alone (read-only; no pool need run).

    The figures are those of ``poolwarden telemetry --db``: breakers as they stand now by the
    clock, each connection's last recorded state, and every count from the log; with ``pool``,
    of that pool's streams only.
    """
    collector = _new_collector()
    reading = await read_log(db, pool=pool)
    telemetry = log_telemetry(reading, db)
    breakers = tuple(sorted((s.key, s.effective_state) for s in reading.statuses))
    collector.snapshot = MetricsSnapshot(system_clock(), telemetry, reading.counts, breakers)
    return _text(_registry(collector))


class PoolMetrics:
    """A pool's telemetry as Prometheus metrics, on a private registry, refreshed on the pool's loop."""

    def __init__(self, pool: PoolView, *, clock: Clock = system_clock) -> None:
        self._collector = _new_collector()
        self.registry: CollectorRegistry = _registry(self._collector)
        """The private registry the metrics live in; register it elsewhere or scrape it."""
        self._pool = pool
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._server: WSGIServer | None = None
        self.refresh_failures = 0
        """Refreshes that failed with a poolwarden error (logged; the last snapshot stays served)."""

    @property
    def snapshot(self) -> MetricsSnapshot | None:
        """The snapshot served now (None before the first refresh)."""
        return self._collector.snapshot

    async def refresh(self) -> MetricsSnapshot:
        """Compute a new snapshot from the pool and serve it from now on (run it on the pool's loop)."""
        snapshot = await snapshot_of_pool(self._pool, self._clock)
        self._collector.snapshot = snapshot
        return snapshot

    async def start(self, interval: float = 15.0) -> PoolMetrics:
        """Refresh now, then every ``interval`` seconds in a background task; returns ``self``."""
        if not interval > 0:
            raise ConfigurationError(f"the refresh interval must be positive, not {interval!r}")
        if self._task is not None:
            raise ConfigurationError("the metrics are already being refreshed")
        await self.refresh()  # the first scrape has figures, and a broken pool fails here, loudly
        self._task = asyncio.create_task(self._refresh_every(interval), name="poolwarden-metrics")
        return self

    async def _refresh_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except PoolwardenError:
                # A store that is busy or closing now may answer next time; the last snapshot
                # stays served meanwhile. Anything else is a bug and ends the task (see stop()).
                self.refresh_failures += 1
                logger.warning("refreshing the pool's metrics failed", exc_info=True)

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` and the health endpoints over HTTP from a thread; returns the port.

        Call it on the pool's loop. Beside ``/metrics``: ``/livez`` (200 while the pool's event
        loop answers within :data:`HEALTH_TIMEOUT` seconds, 503 otherwise), ``/readyz`` and
        ``/healthz`` (200 while at least one connection serves, 503 when none does; the body is
        :func:`~poolwarden.telemetry.live.pool_health`'s JSON, read on the pool's loop at the
        time of the request, not from the last snapshot). Loopback by default: exposing the
        pool's figures beyond the host is a choice to make explicitly (``addr="0.0.0.0"``).
        Port 0 picks a free port.
        """
        if self._server is not None:
            raise ConfigurationError(f"already serving on port {self._server.server_port}")
        self._server = _start_server(addr, port, _App(self.registry, self._pool, asyncio.get_running_loop()))
        return int(self._server.server_port)

    @property
    def port(self) -> int | None:
        """The port ``/metrics`` and the health endpoints are served on (None when not serving)."""
        return None if self._server is None else int(self._server.server_port)

    def exposition(self) -> str:
        """The current snapshot in Prometheus' text format."""
        return _text(self.registry)

    async def stop(self) -> None:
        """Stop refreshing and serving; re-raises what ended the refresh task, if anything did."""
        task, self._task = self._task, None
        server, self._server = self._server, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # stop() itself was cancelled: that must not be swallowed
        if server is not None:
            try:
                # shutdown() waits for the serving thread's poll loop to notice: not on the event loop.
                await asyncio.to_thread(server.shutdown)
            finally:
                server.server_close()
