"""``poolwarden bench pool``: a small run reports every figure, the out-of-process ones included."""

from __future__ import annotations

import json

import pytest

from poolwarden.cli import main


def test_bench_pool_reports_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    """A small run (timings not asserted): the in-process figures and the out-of-process ones."""
    assert main(["bench", "pool", "--requests", "400", "--concurrency", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "requests",
        "pool_requests_per_s",
        "bare_requests_per_s",
        "pool_p50_ms",
        "pool_p99_ms",
        "bare_p50_ms",
        "bare_p99_ms",
        "overhead_ratio",
        "served",
        "pool_cpu_us_per_request",
        "echo_cpu_us_per_request",
        "pool_vs_echo",
        "worker_cpu_us_per_request_pool",
        "worker_cpu_us_per_request_echo",
        "oop_pool_requests_per_s",
        "oop_echo_requests_per_s",
    ):
        assert key in result, key
    assert result["pool_cpu_us_per_request"] > 0
    assert result["echo_cpu_us_per_request"] > 0
    assert result["pool_vs_echo"] > 0
    costs = result["pool_top_costs"]
    assert 1 <= len(costs) <= 10
    for function, share in costs:
        assert isinstance(function, str)
        assert 0 <= share <= 1
