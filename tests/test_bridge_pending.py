"""The requests a worker connection waits on: their deadlines under one timer, and the typed
timeout a request gets from it whether it waits for its answer or in its send."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from poolwarden.bridge.pending import PendingRequests
from poolwarden.bridge.server import BridgeServer, WorkerConnection
from poolwarden.errors import DeadlineExceeded


async def _waiting(
    pending: PendingRequests[str], request_id: int, seconds: float
) -> tuple[asyncio.Future[str], asyncio.Task[str]]:
    """A task waiting for ``request_id``'s reply, registered with a deadline ``seconds`` from now."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()

    async def wait() -> str:
        return await future

    task = asyncio.create_task(wait())
    pending.add(loop, request_id, future, loop.time() + seconds, task)
    return future, task


async def test_a_request_past_its_deadline_is_expired_and_its_task_cancelled() -> None:
    """The timer cancels the task of a request past its deadline, marks it expired and forgets
    it, so that a late answer finds no future."""
    pending: PendingRequests[str] = PendingRequests()
    _, task = await _waiting(pending, 1, 0.02)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pending.expired(1)
    assert pending.future(1) is None
    assert len(pending) == 0


async def test_a_shorter_deadline_after_a_longer_one_expires_on_time() -> None:
    """The one timer is brought forward for a request whose deadline comes before the armed one."""
    pending: PendingRequests[str] = PendingRequests()
    _, slow = await _waiting(pending, 1, 30.0)
    _, fast = await _waiting(pending, 2, 0.02)
    async with asyncio.timeout(2.0):
        with pytest.raises(asyncio.CancelledError):
            await fast
    assert pending.expired(2)
    assert not pending.expired(1)
    assert not slow.done()
    slow.cancel()


async def test_the_timer_rearms_for_the_requests_left() -> None:
    """After expiring the first request, the timer fires again for the next deadline, and a request
    answered in time is not expired."""
    pending: PendingRequests[str] = PendingRequests()
    _, first = await _waiting(pending, 1, 0.01)
    answered, kept = await _waiting(pending, 2, 0.03)
    _, second = await _waiting(pending, 3, 0.05)
    answered.set_result("answer")  # before its deadline: the answer is the task's
    async with asyncio.timeout(2.0):
        for task in (first, second):
            with pytest.raises(asyncio.CancelledError):
                await task
    assert await kept == "answer"
    assert pending.expired(1)
    assert pending.expired(3)
    assert not pending.expired(2)


async def test_an_answer_that_came_before_the_timer_ran_wins() -> None:
    """A request whose future is done when its deadline is checked keeps its answer."""
    pending: PendingRequests[str] = PendingRequests()
    future, task = await _waiting(pending, 1, 0.0)
    future.set_result("on time")  # done before the loop runs the timer
    assert await task == "on time"
    assert not pending.expired(1)
    pending.discard(1)
    assert len(pending) == 0


class _StuckSocket:
    """A socket whose send never completes (a peer that reads nothing: the write buffer is full)."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, data: Any) -> None:
        self.sent += 1
        await asyncio.Event().wait()


def _connection() -> WorkerConnection:
    connection = WorkerConnection(BridgeServer(), "stuck")
    connection._ws = _StuckSocket()  # type: ignore[assignment]
    return connection


async def test_a_request_stuck_in_its_send_gets_the_typed_timeout() -> None:
    """The deadline covers the send too: a request whose send waits on a full buffer raises
    DeadlineExceeded at its timeout, and leaves nothing pending."""
    connection = _connection()
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(2.0):
        with pytest.raises(DeadlineExceeded, match=r"no answer within 0\.05 s"):
            await connection.app_ping(timeout=0.05)
    assert loop.time() - began < 1.0  # cut short at its deadline, not by the test's guard
    assert len(connection._pending) == 0


async def test_a_cancelled_caller_stays_cancelled_and_leaves_no_entry() -> None:
    """A request cancelled by its caller raises CancelledError (not the timeout) and its entry goes."""
    connection = _connection()
    ping = asyncio.create_task(connection.app_ping(timeout=30.0))
    await asyncio.sleep(0.01)
    assert len(connection._pending) == 1
    ping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ping
    assert len(connection._pending) == 0


async def test_a_caller_timeout_around_a_request_is_the_callers() -> None:
    """An ``asyncio.timeout`` of the caller's that ends first is the caller's TimeoutError, not the
    request's DeadlineExceeded (nested cancellations are told apart as asyncio.timeout does)."""
    connection = _connection()
    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(0.02):
            await connection.app_ping(timeout=30.0)
    assert not isinstance(caught.value, DeadlineExceeded)
    assert len(connection._pending) == 0


def test_a_connection_used_again_in_a_new_loop_still_expires_requests() -> None:
    """A timer armed in a loop that ended never rings: the next loop's requests get their own."""
    pending: PendingRequests[str] = PendingRequests()

    async def leave_a_timer_armed() -> None:
        _, task = await _waiting(pending, 1, 0.05)  # the loop ends before the timer rings
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pending.discard(1)

    async def expire_one() -> None:
        await asyncio.sleep(0.1)  # past the old timer's time: a later deadline would not re-arm it
        _, task = await _waiting(pending, 2, 0.02)
        async with asyncio.timeout(2.0):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert pending.expired(2)

    asyncio.run(leave_a_timer_armed())
    asyncio.run(expire_one())


async def test_a_request_stuck_in_its_send_when_the_socket_is_let_go_still_gets_its_timeout() -> None:
    """The socket detached (declared dead) while a request waits in its send: failing its future
    does not reach it, so its deadline still cuts the send short with the typed timeout."""
    connection = _connection()
    ws = connection._ws
    assert ws is not None
    loop = asyncio.get_running_loop()
    began = loop.time()
    ping = asyncio.create_task(connection.app_ping(timeout=0.1))
    await asyncio.sleep(0.01)  # in its send now
    connection._detach(ws, connection.generation, 1006, "declared dead")
    async with asyncio.timeout(2.0):
        with pytest.raises(DeadlineExceeded, match=r"no answer within 0\.1 s"):
            await ping
    assert loop.time() - began < 1.0
    assert len(connection._pending) == 0


def test_requests_left_from_a_loop_closed_under_them_do_not_stop_the_next_loops_deadlines() -> None:
    """A loop closed with a request still in flight (no asyncio.run to cancel it) leaves its entry;
    the next loop's request still gets its timeout, and the dead loop's entry is dropped."""
    connection = _connection()
    old_loop = asyncio.new_event_loop()
    try:
        in_flight = old_loop.create_task(connection.app_ping(timeout=0.05))
        old_loop.run_until_complete(asyncio.sleep(0.01))
        assert not in_flight.done()
    finally:
        old_loop.close()
    assert len(connection._pending) == 1

    async def next_loop() -> None:
        async with asyncio.timeout(2.0):
            with pytest.raises(DeadlineExceeded):
                await connection.app_ping(timeout=0.1)
        assert len(connection._pending) == 0

    asyncio.run(next_loop())


async def test_connections_of_one_server_never_share_a_request_id() -> None:
    """A warm spare's socket handed to another connection may still bring an answer to one of the
    spare's requests: ids are the server's, so such an answer matches nothing of its new owner's."""
    server = BridgeServer()
    spare, owner = WorkerConnection(server, "spare"), WorkerConnection(server, "owner")
    spare._ws = _StuckSocket()  # type: ignore[assignment]
    owner._ws = _StuckSocket()  # type: ignore[assignment]
    pings = [asyncio.create_task(c.app_ping(timeout=30.0)) for c in (spare, owner, spare, owner)]
    await asyncio.sleep(0.01)
    assert len(spare._pending) == len(owner._pending) == 2
    assert not set(spare._pending) & set(owner._pending)
    for ping in pings:
        ping.cancel()
    await asyncio.gather(*pings, return_exceptions=True)
