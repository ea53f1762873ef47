"""A pool on one test host of the fleet tests (tests/test_fleet_netns.py), run through ``ip netns exec``.

Usage: python fleet_pool_child.py URL NAME WORKERS CONNECTIONS REQUESTS

Starts a pool named NAME of CONNECTIONS workers of kind WORKERS (``simulated``, ``chromium``)
on the log at URL and prints ``started FENCE``; serves REQUESTS requests, checking each output against numpy,
and prints ``served N <json of the connection ids that served>``; then waits for a line on
stdin, closes the pool and prints ``closed``. Any failure is a traceback and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np

from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
EXPECTED = reference_forward(resolve_model("toy-mlp"), X)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(url: str, name: str, workers: str, connections: int, requests: int) -> None:
    config = PoolConfig(
        name=name,
        connections=connections,
        workers=(workers,),
        db=url,
        heartbeat_interval=30.0,
        memory_interval=3600.0,
    )
    async with ResourcePool(config) as pool:
        await pool.load_model("toy-mlp")
        say(f"started {pool.store.lease.fence}")  # type: ignore[attr-defined]
        served: set[str] = set()
        for _ in range(requests):
            result = await pool.run_inference("toy-mlp", {"input": X}, deadline=30.0)
            np.testing.assert_allclose(
                np.asarray(result.outputs[0], dtype=np.float32), EXPECTED, rtol=RTOL, atol=ATOL
            )
            served.add(result.connection_id)
        say(f"served {requests} {json.dumps(sorted(served))}")
        await asyncio.to_thread(sys.stdin.readline)
    say("closed")


if __name__ == "__main__":
    url, name, workers, connections, requests = sys.argv[1:6]
    asyncio.run(main(url, name, workers, int(connections), int(requests)))
