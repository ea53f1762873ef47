"""The event store contract: every backend passes this one suite unchanged.

A backend's test module subclasses :class:`StoreContract` and overrides the ``make_store``
fixture to return a factory of unopened stores of that backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from poolwarden.clock import FakeClock
from poolwarden.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    EventNotSerializable,
    LeaseHeld,
    LeaseLost,
    StoreClosed,
    WriteFailed,
)
from poolwarden.events import NewEvent
from poolwarden.storage import EventStore

MakeEvent = Callable[..., NewEvent]


class StoreContract:
    """Behaviour every EventStore backend must show."""

    @pytest.fixture
    def make_store(self) -> Callable[..., EventStore]:
        raise NotImplementedError("a backend's test module provides make_store")

    @pytest.fixture
    async def store(self, make_store: Callable[..., EventStore]) -> AsyncIterator[EventStore]:
        async with make_store() as store:
            yield store

    # --- append and read ------------------------------------------------------------------

    async def test_append_to_new_stream_assigns_versions_and_positions(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """A first append to a stream gets versions 1..n and increasing global positions."""
        result = (await store.append("s/a", [make_event(), make_event()], expected_version=0)).result()
        assert (result.first_version, result.last_version) == (1, 2)
        assert result.last_position == result.first_position + 1
        assert await store.stream_version("s/a") == 2
        assert await store.head_position() == result.last_position

    async def test_every_field_round_trips(self, store: EventStore) -> None:
        """What is appended comes back field for field, the payload decoded from JSON."""
        new = NewEvent(
            type="BreakerOpened",
            occurred_at=1_800_000_123.456789,
            payload={
                "retry_at": 1_800_000_153.5,
                "reason": "5 consecutive failures",
                "nested": [1, {"a": None}],
            },
            schema_version=2,
            incident_id="inc-1",
            connection_id="conn-1",
            model_id="toy-mlp",
            browser="chromium",
            error_kind="transport",
            from_state="closed",
            to_state="open",
            rung="ping",
            outcome="failed",
            latency_ms=12.25,
        )
        await store.append("breaker/conn-1/toy-mlp", [new], expected_version=0)
        (recorded,) = await store.read_stream("breaker/conn-1/toy-mlp")
        assert recorded.to_new_event() == new
        assert recorded.stream == "breaker/conn-1/toy-mlp"
        assert recorded.version == 1
        assert recorded.recorded_at > 0
        assert recorded.payload["nested"] == [1, {"a": None}]

    async def test_unicode_payload_round_trips(self, store: EventStore, make_event: MakeEvent) -> None:
        """Text outside ASCII is stored and read back unchanged."""
        await store.append("s/u", [make_event(payload={"msg": "GPU device lost — réessayer 🙂"})])
        (recorded,) = await store.read_stream("s/u")
        assert recorded.payload == {"msg": "GPU device lost — réessayer 🙂"}

    async def test_append_with_expected_version_continues_stream(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """An append that names the stream's current version continues it."""
        await store.append("s/a", [make_event()], expected_version=0)
        result = (await store.append("s/a", [make_event(), make_event()], expected_version=1)).result()
        assert (result.first_version, result.last_version) == (2, 3)
        assert [e.version for e in await store.read_stream("s/a")] == [1, 2, 3]

    async def test_conflict_raises_and_writes_nothing_of_the_batch(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """A stale expected version raises ConcurrencyConflict and leaves the log as it was."""
        await store.append("s/a", [make_event(), make_event()], expected_version=0)
        head = await store.head_position()
        with pytest.raises(ConcurrencyConflict) as caught:
            await store.append("s/a", [make_event(), make_event(), make_event()], expected_version=1)
        assert (caught.value.stream, caught.value.expected_version, caught.value.actual_version) == (
            "s/a",
            1,
            2,
        )
        assert await store.stream_version("s/a") == 2
        assert await store.head_position() == head

    async def test_expecting_a_new_stream_conflicts_with_an_existing_one(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """expected_version=0 means the stream must not exist yet."""
        await store.append("s/a", [make_event()])
        with pytest.raises(ConcurrencyConflict):
            await store.append("s/a", [make_event()], expected_version=0)

    async def test_expecting_a_future_version_conflicts(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """An expected version beyond the head is a conflict too, never a gap in the stream."""
        with pytest.raises(ConcurrencyConflict):
            await store.append("s/a", [make_event()], expected_version=3)
        assert await store.stream_version("s/a") == 0

    async def test_any_version_appends_at_the_end(self, store: EventStore, make_event: MakeEvent) -> None:
        """Without an expected version, events go after whatever the stream holds."""
        await store.append("s/a", [make_event()])
        result = (await store.append("s/a", [make_event()])).result()
        assert result.first_version == 2

    async def test_conflict_in_one_append_does_not_affect_others_in_the_same_commit(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """Appends gathered into one transaction succeed or fail each on its own."""
        await store.append("s/a", [make_event()], expected_version=0)
        results = await asyncio.gather(
            store.append("s/a", [make_event()], expected_version=0),  # stale
            store.append("s/b", [make_event()], expected_version=0),
            store.append("s/c", [make_event(), make_event()], expected_version=0),
            return_exceptions=True,
        )
        assert isinstance(results[0], ConcurrencyConflict)
        assert await store.streams() == {"s/a": 1, "s/b": 1, "s/c": 2}

    async def test_empty_append_is_checked_but_writes_nothing(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """Appending no events still checks the expected version and adds nothing."""
        await store.append("s/a", [make_event()])
        result = (await store.append("s/a", [], expected_version=1)).result()
        assert (result.first_version, result.last_version) == (2, 1)
        with pytest.raises(ConcurrencyConflict):
            await store.append("s/a", [], expected_version=0)
        assert await store.head_position() == 1

    async def test_read_stream_from_version_with_limit(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """read_stream starts at from_version and stops after limit events."""
        await store.append("s/a", [make_event() for _ in range(5)])
        events = await store.read_stream("s/a", from_version=2, limit=2)
        assert [e.version for e in events] == [2, 3]
        assert await store.read_stream("s/missing") == []

    async def test_read_all_in_position_order_across_streams(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """read_all returns every stream's events interleaved in the order they were committed."""
        for i in range(6):
            await store.append(f"s/{i % 3}", [make_event()])
        events = await store.read_all()
        assert [e.stream for e in events] == ["s/0", "s/1", "s/2", "s/0", "s/1", "s/2"]
        positions = [e.position for e in events]
        assert positions == sorted(positions)
        assert len(set(positions)) == 6
        page = await store.read_all(from_position=positions[2], limit=2)
        assert [e.position for e in page] == positions[2:4]

    async def test_read_all_filters_by_type(self, store: EventStore, make_event: MakeEvent) -> None:
        """read_all with types returns only events of those types."""
        await store.append("s/a", [make_event("A"), make_event("B"), make_event("A"), make_event("C")])
        assert [e.type for e in await store.read_all(types=["A", "C"])] == ["A", "A", "C"]

    async def test_streams_by_prefix(self, store: EventStore, make_event: MakeEvent) -> None:
        """streams(prefix) lists the matching streams with their versions."""
        await store.append("breaker/c1", [make_event()])
        await store.append("breaker/c1/m", [make_event(), make_event()])
        await store.append("connection/c1", [make_event()])
        assert await store.streams("breaker/") == {"breaker/c1": 1, "breaker/c1/m": 2}

    # --- concurrency ------------------------------------------------------------------------

    async def test_32_concurrent_appenders_lose_nothing(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """32 tasks appending with expected versions all succeed, and every stream is contiguous."""

        async def appender(index: int) -> None:
            for version in range(20):
                await store.append(f"s/{index}", [make_event()], expected_version=version)

        await asyncio.gather(*(appender(i) for i in range(32)))
        assert await store.streams() == {f"s/{i}": 20 for i in range(32)}
        events = await store.read_all(limit=10_000)
        assert len(events) == 640
        assert [e.position for e in events] == sorted({e.position for e in events})

    async def test_racing_appenders_on_one_stream_exactly_one_wins_each_version(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """When 10 tasks race to write version 1 of one stream, exactly one succeeds."""
        results = await asyncio.gather(
            *(store.append("s/race", [make_event()], expected_version=0) for _ in range(10)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert all(isinstance(r, ConcurrencyConflict) for r in results if isinstance(r, BaseException))
        assert await store.stream_version("s/race") == 1

    # --- follow -----------------------------------------------------------------------------

    async def test_follow_yields_existing_then_new_events(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """follow() replays the log, then yields each new event as it lands."""
        await store.append("s/a", [make_event(), make_event()])
        follower = store.follow(poll_interval=5.0)
        first = [await anext(follower), await anext(follower)]
        assert [e.version for e in first] == [1, 2]
        waiting = asyncio.ensure_future(anext(follower))
        await store.append("s/b", [make_event()])
        # The local commit wakes the follower; the 5 s poll interval would fail the timeout.
        recorded = await asyncio.wait_for(waiting, timeout=2.0)
        assert (recorded.stream, recorded.version) == ("s/b", 1)
        await follower.aclose()

    async def test_follow_from_a_position(self, store: EventStore, make_event: MakeEvent) -> None:
        """follow(from_position) starts at that position."""
        await store.append("s/a", [make_event() for _ in range(3)])
        follower = store.follow(from_position=3)
        assert (await anext(follower)).position == 3
        await follower.aclose()

    # --- snapshots --------------------------------------------------------------------------

    async def test_snapshot_round_trip_and_latest_wins(self, store: EventStore) -> None:
        """The newest snapshot of a stream is kept; an older one never replaces it."""
        assert await store.load_snapshot("breaker/c1") is None
        await store.save_snapshot("breaker/c1", 10, {"state": "open", "failures": 5})
        await store.save_snapshot("breaker/c1", 20, {"state": "closed", "failures": 0})
        await store.save_snapshot("breaker/c1", 15, {"state": "stale"})
        snapshot = await store.load_snapshot("breaker/c1")
        assert snapshot is not None
        assert (snapshot.version, dict(snapshot.state)) == (20, {"state": "closed", "failures": 0})

    async def test_load_snapshots_by_prefix(self, store: EventStore) -> None:
        """load_snapshots(prefix) returns the latest snapshot of each matching stream."""
        await store.save_snapshot("breaker/a", 1, {"x": 1})
        await store.save_snapshot("breaker/b", 2, {"x": 2})
        await store.save_snapshot("connection/a", 3, {"x": 3})
        snapshots = await store.load_snapshots("breaker/")
        assert {k: v.version for k, v in snapshots.items()} == {"breaker/a": 1, "breaker/b": 2}

    # --- buffered durability -----------------------------------------------------------------

    async def test_buffered_append_commits_by_flush(self, store: EventStore, make_event: MakeEvent) -> None:
        """A buffered append returns a receipt that completes once flush() has committed it."""
        receipts = [
            await store.append("s/a", [make_event()], expected_version=i, durability="buffered")
            for i in range(50)
        ]
        await store.flush()
        assert all(r.done() for r in receipts)
        assert (await receipts[-1]).last_version == 50
        assert await store.stream_version("s/a") == 50

    async def test_buffered_conflict_is_reported_by_receipt_and_flush(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """A buffered append that conflicts fails its receipt, and flush() reports it as WriteFailed."""
        await store.append("s/a", [make_event()], expected_version=0)
        receipt = await store.append("s/a", [make_event()], expected_version=0, durability="buffered")
        with pytest.raises(WriteFailed) as caught:
            await store.flush()
        assert caught.value.failures[0][0] == "s/a"
        assert isinstance(caught.value.failures[0][1], ConcurrencyConflict)
        with pytest.raises(ConcurrencyConflict):
            await receipt
        await store.flush()  # reported once, then the slate is clean

    # --- bad input ----------------------------------------------------------------------------

    async def test_unserialisable_payload_raises_and_writes_nothing(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """A payload JSON cannot hold raises EventNotSerializable; the store keeps serving."""
        bad: dict[str, Any] = {"when": object()}
        with pytest.raises(EventNotSerializable) as caught:
            await store.append("s/a", [make_event(), make_event(payload=bad)])
        assert isinstance(caught.value, TypeError)
        with pytest.raises(EventNotSerializable):
            await store.append("s/a", [make_event(payload={"x": float("nan")})])
        assert await store.stream_version("s/a") == 0
        await store.append("s/a", [make_event()], expected_version=0)

    async def test_a_payload_that_contains_itself_is_refused(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """A payload that contains itself raises EventNotSerializable, as JSON cannot hold it."""
        looped: dict[str, Any] = {"n": 1}
        looped["self"] = looped
        with pytest.raises(EventNotSerializable):
            await store.append("s/a", [make_event(payload={"outer": [looped]})])
        await store.append("s/a", [make_event(payload={"n": 1})], expected_version=0)

    @pytest.mark.parametrize(
        "bad",
        [
            {"payload": {"text": "a\ud800b"}},
            {"payload": {"\udfff": 1}},
            {"connection_id": "conn-\ud800"},
            {"browser": "\udc80"},
            {"incident_id": "\ud83d"},
            {"type": "Bad\ud800"},
        ],
    )
    async def test_text_utf8_cannot_encode_is_refused_per_event_and_fails_no_other_append(
        self, store: EventStore, make_event: MakeEvent, bad: dict[str, Any]
    ) -> None:
        """A lone surrogate (what a decoded ``"\\ud800"`` escape from a peer gives) anywhere in an
        event is refused at append with EventNotSerializable, before it is queued: appends that
        share its write batch, sync or buffered, commit as if it had never been tried."""

        async def good(stream: str) -> None:
            await store.append(stream, [make_event()], durability="buffered")

        one, refused, two = await asyncio.gather(
            good("s/one"), store.append("s/bad", [make_event(**bad)]), good("s/two"), return_exceptions=True
        )
        assert one is None
        assert two is None
        assert isinstance(refused, EventNotSerializable)
        assert "UTF-8" in str(refused)
        await store.flush()
        assert await store.stream_version("s/one") == 1
        assert await store.stream_version("s/two") == 1
        assert await store.stream_version("s/bad") == 0
        await store.append("s/bad", [make_event(payload={"text": "\U0001f600 é"})], expected_version=0)
        assert (await store.read_stream("s/bad"))[0].payload == {"text": "\U0001f600 é"}

    async def test_a_stream_id_utf8_cannot_encode_is_refused(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """A stream id with a lone surrogate is a ConfigurationError; nothing is written."""
        with pytest.raises(ConfigurationError, match="UTF-8"):
            await store.append("s/\ud800", [make_event()])
        await store.append("s/ok", [make_event()])
        assert await store.stream_version("s/ok") == 1

    async def test_closed_store_refuses_work(
        self, make_store: Callable[..., EventStore], make_event: MakeEvent
    ) -> None:
        """After close(), appends and reads raise StoreClosed."""
        store = make_store()
        await store.open()
        await store.close()
        with pytest.raises(StoreClosed):
            await store.append("s/a", [make_event()])
        with pytest.raises(StoreClosed):
            await store.read_all()

    async def test_close_flushes_buffered_appends(
        self, make_store: Callable[..., EventStore], make_event: MakeEvent
    ) -> None:
        """close() commits every buffered append before it returns."""
        store = make_store(durability="buffered")
        await store.open()
        receipts = [await store.append("s/a", [make_event()]) for _ in range(100)]
        await store.close()
        assert all(r.done() for r in receipts)
        assert receipts[-1].result().last_version == 100

    async def test_iter_all_reads_to_the_end_in_order(self, store: EventStore, make_event: MakeEvent) -> None:
        """iter_all() yields every event from a position to the end, across page boundaries, then stops."""
        for i in range(25):
            await store.append(f"s/{i % 4}", [make_event()])
        positions = [e.position async for e in store.iter_all(from_position=3, batch=7)]
        assert positions == list(range(3, 26))
        assert [e.type async for e in store.iter_all(types=["Nothing"])] == []

    # --- read-only SQL ----------------------------------------------------------------------

    async def test_fetch_runs_read_only_queries_with_either_parameter_style(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """fetch() answers a SELECT over the events table, with ``:name`` or ``?`` parameters."""
        for i in range(6):
            await store.append(f"s/{i % 2}", [make_event(connection_id=f"conn-{i % 3}")])
        named = await store.fetch(
            "SELECT stream, COUNT(*) FROM events WHERE position >= :since GROUP BY stream ORDER BY stream",
            {"since": 3},
        )
        assert named == [("s/0", 2), ("s/1", 2)]
        positional = await store.fetch("SELECT MAX(version) FROM events WHERE stream = ?", ("s/1",))
        assert positional == [(3,)]

    async def test_fetch_refuses_anything_but_a_query(self, store: EventStore, make_event: MakeEvent) -> None:
        """fetch() is read-only: a statement that writes is refused and writes nothing."""
        await store.append("s/a", [make_event()])
        with pytest.raises(ConfigurationError):
            await store.fetch("DELETE FROM events")
        assert await store.stream_version("s/a") == 1

    # --- leases and fencing (poolwarden.lease has the rules) -----------------------------------

    @pytest.fixture
    async def timed_store(
        self, make_store: Callable[..., EventStore]
    ) -> AsyncIterator[tuple[EventStore, FakeClock]]:
        clock = FakeClock(1000.0)
        async with make_store(clock=clock) as store:
            yield store, clock

    async def test_a_held_lease_is_refused_to_anyone_until_it_expires(
        self, timed_store: tuple[EventStore, FakeClock]
    ) -> None:
        """The second taker of a live lease gets LeaseHeld naming the holder, the same holder too;
        after the time to live it takes over, with a higher fencing number."""
        store, clock = timed_store
        first = await store.take_lease("main", "host-a:1:1", ttl=10.0)
        assert (first.fence, first.expires_at, first.took_over_from) == (1, 1010.0, None)
        for who in ("host-b:2:2", "host-a:1:1"):
            with pytest.raises(LeaseHeld) as held:
                await store.take_lease("main", who, ttl=10.0)
            assert held.value.holder == "host-a:1:1"
            assert held.value.expires_at == 1010.0
        clock.advance(9.9)
        with pytest.raises(LeaseHeld):
            await store.take_lease("main", "host-b:2:2", ttl=10.0)
        clock.advance(0.2)
        second = await store.take_lease("main", "host-b:2:2", ttl=10.0)
        assert second.fence == 2
        assert second.took_over_from == "host-a:1:1"
        (row,) = await store.leases()
        assert (row.name, row.holder, row.fence, row.released) == ("main", "host-b:2:2", 2, False)

    async def test_a_stale_owner_s_writes_are_refused_and_write_nothing(
        self, timed_store: tuple[EventStore, FakeClock], make_event: MakeEvent
    ) -> None:
        """After a takeover, the old lease's appends and snapshots raise LeaseLost and leave no
        trace; the new owner's events carry its fencing number."""
        store, clock = timed_store
        old = await store.take_lease("main", "old:1:1", ttl=5.0)
        await store.append("pool/main", [make_event()], expected_version=0, fence=old)
        clock.advance(6.0)
        new = await store.take_lease("main", "new:2:2", ttl=5.0)
        with pytest.raises(LeaseLost) as lost:
            await store.append("pool/main", [make_event()], expected_version=1, fence=old)
        assert (lost.value.fence, lost.value.current) == (1, 2)
        with pytest.raises(LeaseLost):
            await store.save_snapshot("pool/main", 1, {"stale": True}, fence=old)
        assert await store.load_snapshot("pool/main") is None
        await store.append("pool/main", [make_event()], expected_version=1, fence=new)
        await store.append("pool/main", [make_event()], expected_version=2)  # no lease: not fenced
        assert [e.fence for e in await store.read_stream("pool/main")] == [1, 2, None]

    async def test_one_fenced_append_refused_fails_no_other_in_its_commit(
        self, timed_store: tuple[EventStore, FakeClock], make_event: MakeEvent
    ) -> None:
        """Buffered appends committed together: the stale owner's is refused, the others land."""
        store, clock = timed_store
        old = await store.take_lease("main", "old:1:1", ttl=5.0)
        clock.advance(6.0)
        new = await store.take_lease("main", "new:2:2", ttl=5.0)
        stale = await store.append("s/stale", [make_event()], durability="buffered", fence=old)
        fresh = await store.append("s/fresh", [make_event()], durability="buffered", fence=new)
        plain = await store.append("s/plain", [make_event()], durability="buffered")
        with pytest.raises(WriteFailed) as failed:
            await store.flush()
        assert [(stream, type(error)) for stream, error in failed.value.failures] == [("s/stale", LeaseLost)]
        assert (await fresh).last_version == 1
        assert (await plain).last_version == 1
        with pytest.raises(LeaseLost):
            await stale
        assert await store.stream_version("s/stale") == 0

    async def test_renewal_extends_the_lease_until_it_is_taken_over(
        self, timed_store: tuple[EventStore, FakeClock]
    ) -> None:
        """A holder renewing in time keeps its lease and fence; once taken over, renewal is LeaseLost."""
        store, clock = timed_store
        lease = await store.take_lease("main", "a:1:1", ttl=3.0)
        for _ in range(5):
            clock.advance(2.0)
            lease = await store.renew_lease(lease, ttl=3.0)
            with pytest.raises(LeaseHeld):
                await store.take_lease("main", "b:2:2", ttl=3.0)
        assert (lease.fence, lease.expires_at) == (1, clock() + 3.0)
        clock.advance(3.5)  # missed its heartbeat: still its own until someone takes over
        lease = await store.renew_lease(lease, ttl=3.0)
        clock.advance(3.5)
        await store.take_lease("main", "b:2:2", ttl=3.0)
        with pytest.raises(LeaseLost) as lost:
            await store.renew_lease(lease, ttl=3.0)
        assert lost.value.current == 2

    async def test_a_released_lease_is_free_at_once_and_fences_its_old_holder(
        self, timed_store: tuple[EventStore, FakeClock], make_event: MakeEvent
    ) -> None:
        """Releasing frees the name before its time; the released lease can no longer write or renew."""
        store, _clock = timed_store
        lease = await store.take_lease("main", "a:1:1", ttl=60.0)
        await store.release_lease(lease)
        with pytest.raises(LeaseLost) as lost:
            await store.append("s/a", [make_event()], fence=lease)
        assert lost.value.current is None
        with pytest.raises(LeaseLost):
            await store.renew_lease(lease, ttl=60.0)
        again = await store.take_lease("main", "b:2:2", ttl=60.0)
        assert (again.fence, again.took_over_from) == (2, None)
        await store.release_lease(lease)  # an old lease's release does not free the new one
        with pytest.raises(LeaseHeld):
            await store.take_lease("main", "c:3:3", ttl=60.0)

    async def test_fencing_numbers_are_unique_across_names(
        self, timed_store: tuple[EventStore, FakeClock]
    ) -> None:
        """A fencing number names one owner's term in the whole log, whatever the pool name."""
        store, _clock = timed_store
        fences = [(await store.take_lease(name, "a:1:1", ttl=5.0)).fence for name in ("main", "east", "west")]
        assert fences == [1, 2, 3]
        assert [row.name for row in await store.leases()] == ["east", "main", "west"]

    # --- what a restore reads ---------------------------------------------------------------------

    async def test_load_heads_gives_each_stream_its_snapshot_and_the_events_after_it(
        self, store: EventStore, make_event: MakeEvent
    ) -> None:
        """load_heads(prefix): a stream with no snapshot (all its events), one snapshotted mid-way
        (the events after it), one snapshotted at its head (none); other prefixes left out."""
        for stream, count in (("b/none", 3), ("b/mid", 5), ("b/head", 4), ("c/other", 2)):
            for _ in range(count):
                await store.append(stream, [make_event()])
        await store.save_snapshot("b/mid", 2, {"at": 2})
        await store.save_snapshot("b/head", 4, {"at": 4})
        heads = await store.load_heads("b/")
        assert sorted(heads) == ["b/head", "b/mid", "b/none"]
        shape = {
            stream: (None if snap is None else (snap.version, snap.state), [e.version for e in tail])
            for stream, (snap, tail) in heads.items()
        }
        assert shape == {
            "b/none": (None, [1, 2, 3]),
            "b/mid": ((2, {"at": 2}), [3, 4, 5]),
            "b/head": ((4, {"at": 4}), []),
        }
        assert all(e.stream == "b/mid" for e in heads["b/mid"][1])
        assert await store.load_heads("z/") == {}
