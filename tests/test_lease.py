"""The lease rules as pure functions (the store contract tests them through every backend)."""

from __future__ import annotations

import os

import pytest

from poolwarden.errors import ConfigurationError, LeaseHeld, LeaseLost
from poolwarden.lease import Lease, LeaseRow, check_pool_name, decide_renew, decide_take, holder_id


@pytest.mark.parametrize("name", ["main", "east-1", "a", "pool_2", "0", "x" * 40])
def test_valid_pool_names(name: str) -> None:
    assert check_pool_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Main", "-a", "a/b", "a.b", "x" * 41, "é", "a b", "a\x00", "conn-x", "conn-0"]
)
def test_names_that_cannot_be_part_of_a_stream_id_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError):
        check_pool_name(name)


def test_holder_names_this_process_and_its_start() -> None:
    """host:pid:start, so a pid reused by another process is another holder."""
    host, pid, started = holder_id().split(":")
    assert host
    assert int(pid) == os.getpid()
    assert int(started) > 0


def test_take_free_expired_released_and_held() -> None:
    free = decide_take(None, name="main", holder="a", ttl=5.0, now=100.0, last_fence=7)
    assert free == Lease("main", "a", 8, 100.0, 105.0, None)
    live = LeaseRow("main", "a", 8, 105.0, released=False)
    with pytest.raises(LeaseHeld) as held:
        decide_take(live, name="main", holder="b", ttl=5.0, now=104.0, last_fence=8)
    assert "runs 1.0 s more" in str(held.value)
    expired = decide_take(live, name="main", holder="b", ttl=5.0, now=105.0, last_fence=8)
    assert (expired.fence, expired.took_over_from) == (9, "a")
    released = decide_take(
        LeaseRow("main", "a", 8, 100.0, released=True),
        name="main",
        holder="b",
        ttl=5.0,
        now=101.0,
        last_fence=8,
    )
    assert (released.fence, released.took_over_from) == (9, None)
    with pytest.raises(ConfigurationError):
        decide_take(None, name="main", holder="a", ttl=0.0, now=1.0, last_fence=0)


def test_renew_only_while_the_fence_is_ours() -> None:
    lease = Lease("main", "a", 3, 0.0, 5.0)
    renewed = decide_renew(LeaseRow("main", "a", 3, 5.0, released=False), lease, ttl=5.0, now=4.0)
    assert (renewed.fence, renewed.expires_at, renewed.acquired_at) == (3, 9.0, 0.0)
    for row, current in ((LeaseRow("main", "b", 4, 9.0, released=False), 4), (None, None)):
        with pytest.raises(LeaseLost) as lost:
            decide_renew(row, lease, ttl=5.0, now=4.0)
        assert lost.value.current == current
