"""The DevTools pipe transport without a browser: the test holds the browser's ends of the pipes."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from poolwarden.browser.pipe import ChromiumPipes, PipeTransport, chromium_pipes
from poolwarden.browser.remote import RemoteClient
from poolwarden.errors import DevToolsError


@dataclass
class Rig:
    pipes: ChromiumPipes
    client: RemoteClient
    browser: PipeTransport  # the browser's side, read and written the same way


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    pipes = chromium_pipes()
    client = RemoteClient(PipeTransport(pipes.parent_read, pipes.parent_write))
    browser = PipeTransport(pipes.child_read, pipes.child_write)
    await client.open()
    await browser.open()
    try:
        yield Rig(pipes, client, browser)
    finally:
        await client.close()
        await browser.close()


async def _answer_next(browser: PipeTransport, **reply: object) -> dict[str, object]:
    raw = await browser.receive()
    assert raw is not None
    command: dict[str, object] = json.loads(raw)
    await browser.send(json.dumps({"id": command["id"], **reply}))
    return command


def test_no_end_of_either_pipe_is_inherited() -> None:
    """Every end is close-on-exec: only the launch hands the browser's ends over (as fds 3 and 4), so
    no other child of this process keeps a browser's fd 3 open after we die."""
    pipes = chromium_pipes()
    try:
        ends = (pipes.child_read, pipes.child_write, pipes.parent_read, pipes.parent_write)
        assert not any(os.get_inheritable(fd) for fd in ends)
    finally:
        pipes.close_all()


async def test_commands_are_nul_delimited_json_and_answers_are_matched(rig: Rig) -> None:
    """A command goes out as one JSON text and a NUL; its answer (by id) is its result, a session id
    is carried, and an error answer raises DevToolsError."""
    sent = asyncio.create_task(rig.client.send("Browser.getVersion", session="S1"))
    command = await _answer_next(rig.browser, result={"product": "Chrome/1"})
    assert command["method"] == "Browser.getVersion"
    assert command["sessionId"] == "S1"
    assert await sent == {"product": "Chrome/1"}
    failing = asyncio.create_task(rig.client.send("Page.nope"))
    await _answer_next(rig.browser, error={"code": -32601, "message": "'Page.nope' wasn't found"})
    with pytest.raises(DevToolsError, match="wasn't found"):
        await failing


async def test_messages_split_or_joined_across_reads_are_framed_by_nul(rig: Rig) -> None:
    """An answer cut in two writes, and an event in the same write as the answer's end, both arrive."""
    loaded = rig.client.expect_event("Page.loadEventFired", session="S")
    sent = asyncio.create_task(rig.client.send("Page.reload"))
    raw = await rig.browser.receive()
    assert raw is not None
    command_id = json.loads(raw)["id"]
    os.write(rig.pipes.child_write, f'{{"id": {command_id}, "res'.encode())
    await asyncio.sleep(0)  # a chance for the client to read the first half alone
    event = {"method": "Page.loadEventFired", "sessionId": "S", "params": {"timestamp": 1}}
    os.write(rig.pipes.child_write, b'ult": {}}\0' + json.dumps(event).encode() + b"\0")
    assert await sent == {}
    assert await loaded == {"timestamp": 1}


async def test_a_browser_that_exits_fails_what_is_pending_and_what_comes_after(rig: Rig) -> None:
    """The browser closing its ends (it exited) fails the command waiting for an answer and the
    event being waited for, at once, and every later command."""
    loaded = rig.client.expect_event("Page.loadEventFired")
    sent = asyncio.create_task(rig.client.send("Page.reload", timeout=30))
    assert await rig.browser.receive() is not None
    await rig.browser.close()
    async with asyncio.timeout(5):
        with pytest.raises(DevToolsError):
            await sent
        with pytest.raises(DevToolsError):
            await loaded
    with pytest.raises(DevToolsError):
        await rig.client.send("Browser.getVersion")


async def test_closing_the_client_is_end_of_file_for_the_browser(rig: Rig) -> None:
    """Our close is what the browser reads as end-of-file on its fd 3 (Chromium then closes itself)."""
    await rig.client.close()
    async with asyncio.timeout(5):
        assert await rig.browser.receive() is None
