"""Simulated workers in a process of their own: ``python -m poolwarden.workers.simulated_process``.

A simulated worker in the pool's process shares its CPU with the pool (numpy, JSON, its own
tasks and frame masks), so a benchmark cannot tell which of the two a cost belongs to. Here the
workers run in a child process and connect to the bridge over loopback with the pool-issued
worker id and secret, exactly as a browser page does.

The parent (:class:`SimulatedProcess`) writes one JSON line per order to the child's stdin, so
that secrets never show on a command line: ``{"start": {"url", "token", "worker_id", "origin"}}``
or ``{"stop": worker_id}``. The child ends when its stdin closes. ``--echo`` makes its workers
answer inferences with precomputed bytes (:class:`~poolwarden.workers.simulated.SimulatedWorker`).

:class:`SimulatedProcessHandle` is a worker handle over such a process, for a pool whose workers
are to run out of its process (``poolwarden bench pool``). It starts, stops, reloads and
restarts its worker; it cannot inject faults (the worker is out of reach) and reports no memory
of its own (the process is shared).
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from poolwarden.errors import PoolwardenError
from poolwarden.workers.handle import InjectedFault
from poolwarden.workers.simulated import SimulatedWorker

if TYPE_CHECKING:
    from poolwarden.bridge.server import BridgeServer, WorkerConnection
    from poolwarden.protocol import Hello

__all__ = ["SimulatedProcess", "SimulatedProcessHandle", "main"]


class SimulatedProcess:
    """A child process running simulated workers on the parent's orders (see the module docstring)."""

    def __init__(self, *, echo: bool = False) -> None:
        self.echo = echo
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self._process is None:
            raise PoolwardenError("the simulated worker process is not running")
        return self._process.pid

    async def start(self) -> None:
        """Start the child process."""
        args = [sys.executable, "-m", "poolwarden.workers.simulated_process"]
        if self.echo:
            args.append("--echo")
        self._process = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE)

    async def _order(self, order: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            raise PoolwardenError("the simulated worker process is not running")
        process.stdin.write(json.dumps(order).encode() + b"\n")
        await process.stdin.drain()

    async def add(self, url: str, token: str, worker_id: str, origin: str | None) -> None:
        """Start a worker in the child for ``worker_id``, connecting to ``url`` with ``token``."""
        await self._order({"start": {"url": url, "token": token, "worker_id": worker_id, "origin": origin}})

    async def remove(self, worker_id: str) -> None:
        """Stop the child's worker for ``worker_id`` (its socket closes with 1001)."""
        await self._order({"stop": worker_id})

    async def close(self, timeout: float = 5.0) -> None:
        """Close the child's stdin, which stops its workers and ends it; kill it after ``timeout``."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def __aenter__(self) -> SimulatedProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SimulatedProcessHandle:
    """A :class:`~poolwarden.workers.handle.WorkerHandle` over a worker in a :class:`SimulatedProcess`."""

    browser = "simulated"

    def __init__(self, server: BridgeServer, worker_id: str, process: SimulatedProcess) -> None:
        self.worker_id = worker_id
        self.server = server
        self.process = process

    @property
    def connection(self) -> WorkerConnection:
        """The logical connection the worker attaches to."""
        return self.server.worker(self.worker_id)

    async def _start(self, timeout: float) -> Hello:
        generation = self.connection.generation
        server = self.server
        await self.process.add(
            server.ws_url(self.worker_id), server.secret_for(self.worker_id), self.worker_id, server.origin
        )
        return await self.connection.wait_for_hello(after=generation, timeout=timeout)

    async def start(self, timeout: float | None = None) -> Hello:
        """Start the worker in the child and wait for its hello."""
        return await self._start(10.0 if timeout is None else timeout)

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """Reload the worker: a new instance, models lost."""
        return await self.restart(timeout)

    async def restart(self, timeout: float | None = None) -> Hello:
        """Stop and start the worker afresh."""
        self.connection.declare_dead("restart rung: restarting")
        await self.process.remove(self.worker_id)
        return await self._start(10.0 if timeout is None else timeout)

    async def stop(self) -> None:
        """Stop the worker (the process goes on, for the others)."""
        with contextlib.suppress(PoolwardenError):  # the process has already ended
            await self.process.remove(self.worker_id)

    async def pss_bytes(self) -> int | None:
        """None: the process is shared by several workers."""
        return None

    async def inject(self, fault: InjectedFault | str) -> None:
        """Not possible: the worker is in another process."""
        raise PoolwardenError(f"cannot inject {InjectedFault(fault)} into an out-of-process simulated worker")


async def _serve(echo: bool) -> None:
    workers: dict[str, SimulatedWorker] = {}
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            order = json.loads(line)
            if "stop" in order:
                worker = workers.pop(order["stop"], None)
                if worker is not None:
                    await worker.stop()
                continue
            spec = order["start"]
            old = workers.pop(spec["worker_id"], None)
            if old is not None:
                await old.stop()
            worker = SimulatedWorker(
                spec["url"], spec["token"], spec["worker_id"], origin=spec["origin"], echo=echo
            )
            workers[spec["worker_id"]] = worker
            await worker.start()
    finally:
        await asyncio.gather(*(worker.stop() for worker in workers.values()), return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    """Run simulated workers on the orders read from stdin, until it closes."""
    parser = argparse.ArgumentParser(prog="python -m poolwarden.workers.simulated_process")
    parser.add_argument("--echo", action="store_true", help="answer inferences with precomputed bytes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(args.echo))


if __name__ == "__main__":
    main()
