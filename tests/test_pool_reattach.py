"""A page that re-attached by itself after a dropped socket is verified, and its breakers half-open."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poolwarden.browser.launcher import find_chromium
from poolwarden.memory import HostReading
from poolwarden.policy import BreakerPolicy
from poolwarden.pool import PoolConfig, ResourcePool
from tests.bridge_helpers import installed

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)

WORKERS = [
    "simulated",
    pytest.param(
        "chromium",
        marks=[
            pytest.mark.browser,
            pytest.mark.skipif(not installed(find_chromium), reason="Chromium is not installed"),
        ],
    ),
]


async def _host() -> HostReading:
    return HostReading(percent=40.0, available_mb=1000, total_mb=16000)


@pytest.mark.parametrize("workers", WORKERS)
async def test_socket_drop_half_opens_the_breakers_within_a_second_of_the_page_returning(
    tmp_path: Path, workers: Any
) -> None:
    """After a socket drop that opened conn-0's breaker, the page re-attaches, a round trip verifies
    it, the breaker is half-open (or closed) within 1 s of its return, and traffic goes back."""
    config = PoolConfig(
        connections=2,
        workers=(workers,),
        db=tmp_path / "pool.db",
        hooks=workers != "simulated",
        heartbeat_interval=30.0,
        memory_interval=3600.0,
        connection_breaker=BreakerPolicy(consecutive_failures=1),
    )
    async with ResourcePool(config, memory_sampler=_host) as pool:
        await pool.load_model("toy-mlp", connection_id="conn-0")
        await pool.inject_fault("conn-0", "socket_drop")
        # Requests right after the cut fail on conn-0 (retried on conn-1): its breaker opens.
        for _ in range(200):
            await pool.run_inference("toy-mlp", {"input": X}, deadline=5.0)
            if "conn-0" in pool.reattachments:
                break
        while "conn-0" not in pool.reattachments:
            await pool.wait_changed(1.0)
        verified, took = pool.reattachments["conn-0"]
        assert verified
        assert took < 5.0
        assert str(pool.registry.connection("conn-0").state) in ("half_open", "closed")
        served_on = {(await pool.run_inference("toy-mlp", {"input": X})).connection_id for _ in range(20)}
        assert "conn-0" in served_on  # traffic resumes there
        await pool.flush()
        events = [e async for e in pool.store.iter_all()]
        opened = [e for e in events if e.type == "BreakerOpened" and e.stream == "breaker/conn-0"]
        assert opened, "the drop opened conn-0's breaker"
        (back,) = [e for e in events if e.type == "PageReattached"]
        assert (back.connection_id, back.outcome) == ("conn-0", "verified")
        half = [e for e in events if e.type == "BreakerHalfOpened" and e.stream == "breaker/conn-0"]
        assert half
        assert half[0].occurred_at - back.occurred_at < 1.0
        assert str(pool.registry.connection("conn-0").state) == "closed"


@pytest.mark.parametrize("workers", WORKERS)
def test_test_recovery_socket_drop_returns_within_10_s_with_exit_0(tmp_path: Path, workers: Any) -> None:
    """``poolwarden test-recovery --fault socket_drop``: recovered by the page itself, exit 0, < 10 s."""
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolwarden",
            "test-recovery",
            "--fault",
            "socket_drop",
            "--workers",
            workers,
            "--db",
            str(tmp_path / "t.db"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["recovered"] is True
    assert report["rung"] == "page"
    assert report["outcome"] == "recovered by the page itself"
    assert took < 10.0
