"""Durable breakers: the asyncio driver against the SQLite event store."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from poolwarden.aio.durable_breakers import DurableBreakers
from poolwarden.bench.restore_file import write_log
from poolwarden.breaker import BreakerState
from poolwarden.breaker_events import key_of_stream
from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.clock import FakeClock
from poolwarden.errors import DatabaseLocked
from poolwarden.events import NewEvent, Snapshot
from poolwarden.policy import BreakerPolicy, ErrorKind, OpenBackoff
from poolwarden.replay import restore, restore_all
from poolwarden.storage import Receipt, SQLiteEventStore, open_store
from tests._breaker_support import simulate

T0 = 1_800_000_000.0
POLICY = BreakerPolicy(consecutive_failures=3, backoff=OpenBackoff(base=30.0, jitter="none"))


def registry(clock: FakeClock) -> BreakerRegistry:
    """A registry whose breakers trip on three failures and wait 30 s."""
    return BreakerRegistry(
        connection_policy=POLICY, model_policy=POLICY, named_policy=POLICY, clock=clock, rng=random.Random(0)
    )


def trip(reg: BreakerRegistry, key: str) -> None:
    """Open the named breaker ``key`` with three transport failures."""
    for _ in range(3):
        reg.named(key).record_failure(ErrorKind.TRANSPORT)


async def test_open_breaker_is_found_open_by_a_fresh_registry(tmp_path: Path) -> None:
    """A breaker opened and flushed is restored OPEN, with the same retry_at, from the same file."""
    clock = FakeClock(T0)
    db = tmp_path / "breakers.db"
    first = registry(clock)
    async with open_store(db) as store, DurableBreakers(store, first) as durable:
        trip(first, "payments")
        assert await durable.flush() == 4
    clock.advance(10.0)
    second = registry(clock)
    async with open_store(db) as store, DurableBreakers(store, second):
        restored = second.get("payments")
        assert restored is not None
        assert restored.state is BreakerState.OPEN
        assert restored.retry_at == T0 + 30.0
        assert not restored.allow()


async def test_breaker_whose_wait_passed_while_down_comes_back_half_open(tmp_path: Path) -> None:
    """Restored after its retry_at, a breaker is HALF_OPEN and that transition is itself persisted."""
    clock = FakeClock(T0)
    db = tmp_path / "breakers.db"
    first = registry(clock)
    async with open_store(db) as store, DurableBreakers(store, first):
        trip(first, "payments")
    clock.advance(3_600.0)
    second = registry(clock)
    async with open_store(db) as store, DurableBreakers(store, second):
        assert second.named("payments").state is BreakerState.HALF_OPEN
        events = await store.read_stream("breaker/payments")
        assert events[-1].type == "BreakerHalfOpened"
        assert events[-1].occurred_at == T0 + 30.0


CHILD = """
import asyncio, json, sys
from poolwarden.aio.guard import open_breakers
async def main():
    async with open_breakers(sys.argv[1]) as breakers:
        b = breakers.breaker("payments")
        print(json.dumps({"state": b.state.value, "retry_at": b.retry_at}))
asyncio.run(main())
"""


async def read_in_child(db: Path) -> dict[str, Any]:
    """The state of breaker 'payments' as a fresh Python process restores it from ``db``."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(("opened_ago", "state"), [(0.0, "open"), (3_600.0, "half_open")])
async def test_a_fresh_process_finds_the_breaker_open_or_half_open(
    tmp_path: Path, opened_ago: float, state: str
) -> None:
    """Another process reading the same file finds the breaker open, or half-open once its wait passed."""
    clock = FakeClock(time.time() - opened_ago)
    db = tmp_path / "breakers.db"
    reg = BreakerRegistry(
        named_policy=BreakerPolicy(backoff=OpenBackoff(base=600.0, jitter="none")),
        clock=clock,
        rng=random.Random(0),
    )
    async with open_store(db) as store, DurableBreakers(store, reg):
        for _ in range(5):
            reg.named("payments").record_failure(ErrorKind.TRANSPORT)
    assert await read_in_child(db) == {"state": state, "retry_at": clock() + 600.0}


async def test_snapshots_are_taken_every_n_events_and_restore_from_them(tmp_path: Path) -> None:
    """With snapshot_every=10, a stream of 25+ events has a snapshot, and restore equals the live state."""
    clock = FakeClock(T0)
    db = tmp_path / "breakers.db"
    live = registry(clock)
    async with open_store(db) as store:
        async with DurableBreakers(store, live, snapshot_every=10) as durable:
            for _ in range(8):
                trip(live, "api")
                retry_at = live.named("api").retry_at
                assert retry_at is not None
                clock.advance(retry_at - clock())
                assert not live.named("api").allow()  # half-opens: the round is claimed first
                await durable.flush()  # the claim is in the log: the round is ours
                trial = live.named("api").allow()
                assert trial.reason == "half_open trial"
                live.named("api").record_success(trial.permit)
                await durable.flush()
        snapshot = await store.load_snapshot("breaker/api")
        version = await store.stream_version("breaker/api")
        assert snapshot is not None
        assert version >= 25
        assert 10 <= snapshot.version <= version
    restored = registry(clock)
    async with open_store(db) as store, DurableBreakers(store, restored):
        assert restored.named("api").snapshot() == live.named("api").snapshot()


async def test_clean_shutdown_snapshots_every_breaker_at_its_head(tmp_path: Path) -> None:
    """After a clean exit every breaker stream's snapshot is at its last version: no tail to read."""
    clock = FakeClock(T0)
    reg = registry(clock)
    async with open_store(tmp_path / "b.db") as store:
        async with DurableBreakers(store, reg, snapshot_every=1_000):
            trip(reg, "a")
            reg.named("b").record_success()
            reg.named("c").record_failure(ErrorKind.TIMEOUT)
        versions = await store.streams("breaker/")
        snapshots = await store.load_snapshots("breaker/")
        assert versions == {"breaker/a": 4, "breaker/b": 1, "breaker/c": 1}
        assert {stream: snap.version for stream, snap in snapshots.items()} == versions


async def test_an_evicted_breaker_restores_as_the_one_created_again(tmp_path: Path) -> None:
    """After eviction and re-creation, the breaker restored from the log equals the live one."""
    clock = FakeClock(T0)
    db = tmp_path / "b.db"
    policy = BreakerPolicy(consecutive_failures=None, failure_rate=0.5)
    live = BreakerRegistry(named_policy=policy, clock=clock, rng=random.Random(0), idle_after=60.0)
    async with open_store(db) as store, DurableBreakers(store, live) as durable:
        for _ in range(30):
            live.named("quiet").record_success()
        live.named("quiet").force_open("ops", "drill")
        live.named("quiet").reset("ops", "drill over")
        await durable.checkpoint()
        durable.evict_idle()
        clock.advance(61.0)
        assert durable.evict_idle() == 1
        assert "quiet" not in live
        live.named("quiet").record_failure(ErrorKind.TIMEOUT)  # created again, then used
        await durable.flush()
        types = [e.type for e in await store.read_stream("breaker/quiet")]
        assert types[-2:] == ["BreakerEvicted", "CallFailed"]
    restored = BreakerRegistry(named_policy=policy, clock=clock, rng=random.Random(0))
    async with open_store(db) as store, DurableBreakers(store, restored):
        assert restored.named("quiet").snapshot() == live.named("quiet").snapshot()
        assert restored.named("quiet").epoch == 0


async def test_successes_survive_a_restart_through_the_exit_summary(tmp_path: Path) -> None:
    """Window counts of successes are summarised at exit, so the restored window equals the live one."""
    clock = FakeClock(T0)
    db = tmp_path / "breakers.db"
    policy = BreakerPolicy(consecutive_failures=None, failure_rate=0.5)
    live = BreakerRegistry(named_policy=policy, clock=clock, rng=random.Random(0))
    async with open_store(db) as store, DurableBreakers(store, live):
        for i in range(30):
            live.named("db").record_success(duration=0.01)
            if i % 4 == 0:
                live.named("db").record_failure(ErrorKind.TIMEOUT, 0.5)
    restored = BreakerRegistry(named_policy=policy, clock=clock, rng=random.Random(0))
    async with open_store(db) as store, DurableBreakers(store, restored):
        assert restored.named("db").snapshot() == live.named("db").snapshot()
        assert restored.named("db").snapshot()["window"]["codes"].count("0") == 30


async def test_two_writers_of_one_breaker_rebase_and_keep_their_events(tmp_path: Path) -> None:
    """A second driver whose append meets the first's events rebases onto them: nothing lost, no
    conflict raised, both breakers and a restore agree (the first trip wins)."""
    clock = FakeClock(T0)
    async with open_store(tmp_path / "b.db") as store:
        one, two = registry(clock), registry(clock)
        driver_one = DurableBreakers(store, one)
        driver_two = DurableBreakers(store, two)
        await driver_one.restore()
        await driver_two.restore()
        trip(one, "shared")
        clock.advance(1.0)
        trip(two, "shared")
        assert await driver_one.flush() == 4
        assert await driver_two.flush() == 4
        assert driver_two.pending == 0
        assert driver_two.rebased == 1
        records = await store.read_stream("breaker/shared")
        assert [r.version for r in records] == list(range(1, 9))
        assert [r.payload.get("decided_on") for r in records] == [None] * 4 + [0] * 4
        assert one.named("shared").retry_at == two.named("shared").retry_at == T0 + 30.0
        assert one.named("shared").shared_state() == two.named("shared").shared_state()
        fresh = registry(clock)
        await DurableBreakers(store, fresh).restore()
        assert fresh.named("shared").shared_state() == one.named("shared").shared_state()


class FlakyStore(SQLiteEventStore):
    """The real store, whose next ``failures`` appends raise DatabaseLocked (fault injection)."""

    failures = 0

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None = None,
        *,
        durability: Any = None,
    ) -> Receipt:
        if self.failures:
            self.failures -= 1
            raise DatabaseLocked(self.path, "injected: held by another writer")
        return await super().append(stream, events, expected_version, durability=durability)


async def test_events_that_failed_to_append_are_retried_in_order(tmp_path: Path) -> None:
    """After a failed flush, the next flush writes the kept events first, then the new ones."""
    clock = FakeClock(T0)
    reg = registry(clock)
    store = FlakyStore(tmp_path / "b.db")
    async with store:
        durable = DurableBreakers(store, reg)
        await durable.restore()
        reg.named("x").record_failure(ErrorKind.TRANSPORT)
        store.failures = 1
        with pytest.raises(DatabaseLocked):
            await durable.flush()
        assert durable.pending == 1
        reg.named("x").record_failure(ErrorKind.TIMEOUT)
        assert await durable.flush() == 2
        kinds = [e.error_kind for e in await store.read_stream("breaker/x")]
        assert kinds == ["transport", "timeout"]


async def test_background_loop_flushes_without_being_asked(tmp_path: Path) -> None:
    """Events emitted while the driver runs reach the store without an explicit flush."""
    clock = FakeClock(T0)
    reg = registry(clock)
    async with (
        open_store(tmp_path / "b.db") as store,
        DurableBreakers(store, reg, flush_interval=0.01) as durable,
    ):
        trip(reg, "auto")
        durable.wake()
        async for event in store.follow(poll_interval=0.01):
            if event.type == "BreakerOpened":
                break
        assert event.stream == "breaker/auto"


class GatedStore(SQLiteEventStore):
    """The real store, whose appends wait at a gate first: a commit that takes as long as the
    test says, so that shutdown can be started while the background flush is in the middle of one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None = None,
        *,
        durability: Any = None,
    ) -> Receipt:
        self.waiting.set()
        await self.gate.wait()
        return await super().append(stream, events, expected_version, durability=durability)


async def test_exit_during_a_background_flush_loses_nothing_and_raises_nothing(tmp_path: Path) -> None:
    """Leaving the driver while its background loop is mid-append (drained, not yet committed)
    waits for that append instead of cancelling it: every event is committed once, in order, and
    a fresh driver restores the same state."""
    clock = FakeClock(T0)
    reg = registry(clock)
    store = GatedStore(tmp_path / "b.db")
    async with store:
        durable = DurableBreakers(store, reg, flush_interval=0.01)
        await durable.__aenter__()  # its first flush has nothing to append
        trip(reg, "busy")
        durable.wake()
        await store.waiting.wait()  # the loop has drained the events and is appending them
        leaving = asyncio.ensure_future(durable.__aexit__(None, None, None))
        await asyncio.sleep(0)  # let the exit start while the append waits at the gate
        store.gate.set()
        await leaving
        types = [e.type for e in await store.read_stream("breaker/busy")]
        assert types.count("BreakerOpened") == 1
        assert types.count("CallFailed") == 3
        fresh = registry(clock)
        await DurableBreakers(store, fresh).restore()
        assert fresh.named("busy").state is BreakerState.OPEN


async def test_the_pools_flush_commits_breaker_events(tmp_path: Path) -> None:
    """ResourcePool.flush() waits for its breakers' events too (it said so; it did not)."""
    from poolwarden.pool import PoolConfig, ResourcePool

    config = PoolConfig(
        connections=1, workers=("simulated",), db=tmp_path / "pool.db", memory_interval=3600.0
    )
    async with ResourcePool(config) as pool:
        pool.registry.connection("conn-0").force_open(who="operator", why="maintenance")
        await pool.flush()
        async with open_store(tmp_path / "pool.db", read_only=True) as reader:
            types = [e.type for e in await reader.read_stream("breaker/conn-0")]
        assert "BreakerOverridden" in types


async def test_exit_after_the_loop_alone_was_cancelled_still_flushes(tmp_path: Path) -> None:
    """If only the background loop was cancelled (not the exit), leaving the driver raises no
    CancelledError and still commits the breakers' events and snapshots."""
    clock = FakeClock(T0)
    reg = registry(clock)
    async with open_store(tmp_path / "b.db") as store:
        durable = DurableBreakers(store, reg, flush_interval=3600.0)
        await durable.__aenter__()
        loop_task = durable._task
        assert loop_task is not None
        loop_task.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
        trip(reg, "lonely")
        await durable.__aexit__(None, None, None)
        types = [e.type for e in await store.read_stream("breaker/lonely")]
        assert types.count("BreakerOpened") == 1
        assert (await store.load_snapshots("breaker/"))["breaker/lonely"].version == len(types)


async def test_poll_follows_another_writers_trip_in_one_read(tmp_path: Path) -> None:
    """A poll makes a held breaker follow another driver's trip (its failures stay its own), and
    restores a breaker this driver never held."""
    clock = FakeClock(T0)
    async with open_store(tmp_path / "b.db") as store:
        one, two = registry(clock), registry(clock)
        driver_one, driver_two = DurableBreakers(store, one), DurableBreakers(store, two)
        await driver_one.restore()
        await driver_two.restore()
        two.named("shared").record_failure(ErrorKind.TRANSPORT)
        await driver_two.flush()
        trip(one, "shared")
        trip(one, "only-one")
        await driver_one.flush()
        assert await driver_two.poll() == 8
        assert two.named("shared").state is BreakerState.OPEN
        assert two.named("shared").retry_at == one.named("shared").retry_at
        assert "only-one" in two
        assert two.named("only-one").shared_state() == one.named("only-one").shared_state()
        assert driver_two.merged == 5  # one BreakerOpened, four events restoring "only-one"
        assert await driver_two.poll() == 0


async def test_poll_leaves_a_stream_with_own_events_to_the_append(tmp_path: Path) -> None:
    """A breaker with events of its own waiting does not follow at poll time; its append rebases."""
    clock = FakeClock(T0)
    async with open_store(tmp_path / "b.db") as store:
        one, two = registry(clock), registry(clock)
        driver_one, driver_two = DurableBreakers(store, one), DurableBreakers(store, two)
        await driver_one.restore()
        await driver_two.restore()
        trip(one, "shared")
        await driver_one.flush()
        two.named("shared").record_failure(ErrorKind.TRANSPORT)
        await driver_two.poll()
        assert two.named("shared").state is BreakerState.CLOSED
        assert await driver_two.flush() == 1
        assert driver_two.rebased == 1
        assert two.named("shared").state is BreakerState.OPEN
        assert await store.stream_version("breaker/shared") == 5


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_restore_from_the_file_equals_a_replay_of_the_whole_log(tmp_path: Path, seed: int) -> None:
    """Breakers restored from a file of random traffic (each stream snapshotted at a random
    version, its tail after) equal those a replay of every event makes, window included."""
    breakers, log, clock = simulate(40, 2_000, seed=seed)
    policy = next(iter(breakers.values())).policy
    rng = random.Random(seed)
    snapshots: dict[str, Snapshot] = {}
    for stream, head in log.versions.items():
        cut = rng.randrange(head + 1)  # 0: no snapshot, head: no tail
        if cut:
            at_cut = restore(
                key_of_stream(stream),
                log.stream(stream)[:cut],
                policy=policy,
                clock=clock,
                rng=rng,
                catch_up=False,
            )
            snapshots[stream] = Snapshot(stream, cut, at_cut.snapshot(), clock())
    db = tmp_path / "breakers.db"
    await asyncio.to_thread(write_log, db, log.records, snapshots)  # it runs a loop of its own
    expected = restore_all(
        log.records, policy_for=lambda key, level: policy, clock=clock, rng=random.Random(0), catch_up=True
    )
    restored = BreakerRegistry(connection_policy=policy, clock=clock, rng=random.Random(0))
    async with open_store(db, read_only=True) as store:
        assert await DurableBreakers(store, restored, poll_interval=None).restore() == len(expected)
    assert {b.key: b.snapshot() for b in restored} == {key: b.snapshot() for key, b in expected.items()}
    assert any(b.snapshot()["window"]["codes"] for b in restored)  # windows came back from snapshots
