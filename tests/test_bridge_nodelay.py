"""The bridge's sockets send each frame at once (TCP_NODELAY): no 40 ms wait for a delayed ACK."""

from __future__ import annotations

import socket

from poolwarden.bridge.server import BridgeServer
from poolwarden.workers.simulated_handle import SimulatedHandle


async def test_a_workers_socket_has_nagle_off() -> None:
    async with BridgeServer() as server:
        handle = SimulatedHandle(server, "w-1")
        await handle.start()
        try:
            sock = handle.connection._require_ws().transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            await handle.stop()
