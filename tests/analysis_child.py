"""A process that opens a recovery incident, then keeps writing memory samples until it is killed.

Usage: python analysis_child.py DB

Appends (sync) RecoveryStarted and RungAttempted for incident ``inc-crash`` on ``connection/conn-9``
and then MemorySampled events without end. After each append returns it prints the event's
position and flushes, so that the parent knows what was acknowledged when it kills this process.
"""

from __future__ import annotations

import asyncio
import sys
import time

from poolwarden.events import NewEvent
from poolwarden.storage import SQLiteEventStore

STREAM = "connection/conn-9"


async def main(db: str) -> None:
    ids = {"connection_id": "conn-9", "browser": "chromium"}
    async with SQLiteEventStore(db, durability="sync") as store:
        opening = [
            NewEvent(
                type="RecoveryStarted",
                occurred_at=time.time(),
                payload={"trigger": "process_exited"},
                incident_id="inc-crash",
                error_kind="process_exit",
                from_state="healthy",
                rung="restart",
                **ids,
            ),
            NewEvent(
                type="RungAttempted",
                occurred_at=time.time(),
                payload={"method": "restart", "attempt": 1},
                incident_id="inc-crash",
                rung="restart",
                to_state="restarting",
                **ids,
            ),
        ]
        for event in opening:
            result = (await store.append(STREAM, [event])).result()
            print(result.last_position, flush=True)
        n = 0
        while True:
            n += 1
            sample = NewEvent(
                type="MemorySampled", occurred_at=time.time(), payload={"pss_mb": 400.0 + n}, **ids
            )
            result = (await store.append(STREAM, [sample])).result()
            sys.stdout.write(f"{result.last_position}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
