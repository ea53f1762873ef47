"""What the recovery ladder drives: a worker it can reconnect, restart and verify.

A :class:`WorkerHandle` owns one worker (a Chromium process with its page, or a simulated
worker) attached to a :class:`~poolwarden.bridge.server.WorkerConnection`. Its methods are the
primitive actions of the ladder's rungs; the lifecycle machine's driver decides which to run:

- rung 1, ping: ``handle.connection.app_ping(timeout)``;
- rung 2, reconnect: :meth:`WorkerHandle.reconnect` (``hung=True`` crashes the page first);
- rung 3, restart: :meth:`WorkerHandle.restart` (kill the process group, relaunch);
- after each: :func:`verify_round_trip`, a tiny inference checked against numpy, because a rung
  counts only once a real answer has come back.

:meth:`WorkerHandle.inject` causes the faults the benchmark and ``test-recovery`` measure.
"""

# ruff: noqa: ASYNC109 -- each primitive has its own deadline, which the ladder sets per rung.

from __future__ import annotations

import time
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from poolwarden.errors import ModelError
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model

if TYPE_CHECKING:
    from poolwarden.bridge.server import WorkerConnection
    from poolwarden.protocol import Hello

__all__ = ["PROBE_MODEL", "InjectedFault", "WorkerHandle", "verify_round_trip"]

PROBE_MODEL = "_probe"
"""The name under which :func:`verify_round_trip` loads its tiny toy-mlp."""

_PROBE_INPUT = [[(i - 7.5) / 8.0 for i in range(16)]]


class InjectedFault(StrEnum):
    """The faults a handle can cause on purpose (for the recovery benchmark and test-recovery)."""

    BROWSER_KILL = "browser_kill"
    RENDERER_CRASH = "renderer_crash"
    PAGE_HANG = "page_hang"
    SOCKET_DROP = "socket_drop"
    DEVICE_LOST = "device_lost"


class WorkerHandle(Protocol):
    """A worker the pool owns: started, reconnected, restarted and stopped through this handle."""

    worker_id: str
    browser: str

    @property
    def connection(self) -> WorkerConnection:
        """The logical connection the worker's page attaches to."""
        ...

    async def start(self, timeout: float | None = None) -> Hello:
        """Start the worker and return its first hello."""
        ...

    async def reconnect(self, *, hung: bool, timeout: float = 10.0) -> Hello:
        """Reload the page (crashing it first when ``hung``) and return the new hello."""
        ...

    async def restart(self, timeout: float | None = None) -> Hello:
        """Kill the worker's processes, start it afresh, and return the new hello."""
        ...

    async def stop(self) -> None:
        """Stop the worker and release everything it holds."""
        ...

    async def inject(self, fault: InjectedFault | str) -> None:
        """Cause ``fault`` (needs a page loaded with test hooks for page_hang and device_lost)."""
        ...

    async def pss_bytes(self) -> int | None:
        """PSS of the worker's process tree (sampled in a thread), or None when it has none of its own."""
        ...


async def verify_round_trip(connection: WorkerConnection, timeout: float = 5.0) -> float:
    """Load the probe model, run one tiny inference, check it against numpy; return the seconds taken.

    Raises DeadlineExceeded, WorkerDisconnected, ModelError (kind ``wrong_result`` when the numbers
    are wrong) and the other request errors, exactly as a real request would.
    """
    started = time.perf_counter()
    deadline = started + timeout
    await connection.load_model(PROBE_MODEL, "toy-mlp", timeout=timeout)
    result = await connection.infer(
        PROBE_MODEL, {"input": _PROBE_INPUT}, timeout=max(0.001, deadline - time.perf_counter())
    )
    import numpy as np

    expected = reference_forward(resolve_model("toy-mlp"), _PROBE_INPUT)
    got = result.tensors[0].to_numpy() if result.tensors else np.zeros(0, np.float32)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
        raise ModelError(
            f"worker {connection.connection_id!r} computed {got.tolist()}, expected {expected.tolist()}",
            "wrong_result",
        )
    return time.perf_counter() - started
