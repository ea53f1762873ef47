"""CDP over the pipes Chromium inherits with ``--remote-debugging-pipe``.

Chromium started with ``--remote-debugging-pipe`` reads commands from its file descriptor 3 and
writes answers and events to its descriptor 4, each message one JSON text followed by a NUL byte.
No port is opened, so no other process can reach the browser's DevTools: only the holder of the
other ends of the two pipes (the Python process that launched it). When our write end closes (we
close it, or the process dies and the kernel closes it), Chromium reads end-of-file on fd 3 and
closes itself (``ChromeDevToolsManagerDelegate::CloseBrowserSoon``): a browser does not outlive
its owner.

:func:`chromium_pipes` makes the two pipes; :class:`PipeTransport` is the parent's side, read and
written through the event loop (``connect_read_pipe`` / ``connect_write_pipe``), never blocking it.
"""

# ruff: noqa: ASYNC109 -- open() takes the Transport protocol's timeout, unused here.

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

from poolwarden.errors import DevToolsError

__all__ = ["MAX_MESSAGE_BYTES", "ChromiumPipes", "PipeTransport", "chromium_pipes"]

MAX_MESSAGE_BYTES = 2**26
"""The largest message read from the browser (a NUL-terminated JSON text)."""


@dataclass
class ChromiumPipes:
    """Both pipes: the child's ends (to become its fds 3 and 4) and ours."""

    child_read: int
    child_write: int
    parent_read: int
    parent_write: int

    def close_child_ends(self) -> None:
        """Close the child's ends in the parent once the child holds its own copies."""
        for fd in (self.child_read, self.child_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close_all(self) -> None:
        """Close every end still open here (a launch that failed before the transport took ours)."""
        self.close_child_ends()
        for fd in (self.parent_read, self.parent_write):
            with contextlib.suppress(OSError):
                os.close(fd)


def chromium_pipes() -> ChromiumPipes:
    """Two pipes, every end non-inheritable (``os.pipe``'s default), so no other child of this
    process ever holds one: Chromium sees end-of-file exactly when *we* close or die."""
    to_child_read, to_child_write = os.pipe()
    from_child_read, from_child_write = os.pipe()
    return ChromiumPipes(to_child_read, from_child_write, from_child_read, to_child_write)


class _WriteSide(asyncio.BaseProtocol):
    """Flow control and the end of the write pipe, for :class:`PipeTransport`."""

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()  # nobody waits on a pipe that is gone
        if not self.lost.done():
            self.lost.set_result(None)

    async def drain(self) -> None:
        """Wait while the pipe's buffer is over its high-water mark; raise once the pipe is gone."""
        await self._writable.wait()
        if self.lost.done():
            raise DevToolsError("the DevTools pipe closed (the browser is gone)")


class PipeTransport:
    """Our side of Chromium's DevTools pipes: NUL-delimited JSON messages, read and written through
    the event loop. It owns both descriptors and closes them (closing the browser) in :meth:`close`.
    """

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._reader: asyncio.StreamReader | None = None
        self._read_transport: asyncio.ReadTransport | None = None
        self._write_transport: asyncio.WriteTransport | None = None
        self._write_side: _WriteSide | None = None
        self._closed = False

    async def open(self, timeout: float = 0.0) -> None:
        """Hand both descriptors to the event loop (the pipes are connected from the start)."""
        if self._reader is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_MESSAGE_BYTES)
        read_file = os.fdopen(self._read_fd, "rb", buffering=0)
        self._read_fd = -1  # the file (and then the loop's transport) owns it now
        self._read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), read_file
        )
        self._reader = reader
        write_file = os.fdopen(self._write_fd, "wb", buffering=0)
        self._write_fd = -1
        self._write_transport, self._write_side = await loop.connect_write_pipe(_WriteSide, write_file)

    async def send(self, message: str) -> None:
        transport, side = self._write_transport, self._write_side
        if transport is None or side is None or self._closed or transport.is_closing():
            raise DevToolsError("the DevTools pipe is closed")
        transport.write(message.encode() + b"\0")  # buffered by the loop: never blocks
        await side.drain()

    async def receive(self) -> str | None:
        reader = self._reader
        if reader is None:
            raise DevToolsError("the DevTools pipe is not open")
        try:
            data = await reader.readuntil(b"\0")
        except asyncio.IncompleteReadError:
            return None  # end of file: the browser closed its end (it exited)
        except asyncio.LimitOverrunError as exc:
            raise DevToolsError(f"a DevTools message over {MAX_MESSAGE_BYTES} bytes") from exc
        except OSError as exc:
            raise DevToolsError(f"the DevTools pipe broke: {exc!r}") from exc
        return data[:-1].decode()

    async def close(self) -> None:
        """Close both ends; Chromium reads end-of-file and closes itself soon after."""
        if self._closed:
            return
        self._closed = True
        write_transport, self._write_transport = self._write_transport, None
        read_transport, self._read_transport = self._read_transport, None
        for fd in (self._read_fd, self._write_fd):  # those never handed to the loop
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._read_fd = self._write_fd = -1
        if read_transport is not None:
            read_transport.close()
        if write_transport is not None and self._write_side is not None:
            if not write_transport.is_closing():  # else the browser's exit already closed it
                write_transport.abort()  # unsent commands are moot; a hung browser must not hold us
            await self._write_side.lost
