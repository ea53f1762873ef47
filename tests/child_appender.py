"""A separate process that appends to a store and reports each append once it has returned.

Usage: python child_appender.py DB-OR-URL PREFIX COUNT [--shared STREAM]

Appends COUNT events in sync mode, one per call, to PREFIX/0..3 with expected versions (and,
with --shared, every other one to STREAM without a version check). After each append returns it
prints ``stream version position`` and flushes, so that a parent knows what was acknowledged
even if it kills this process a moment later.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from poolwarden.events import NewEvent
from poolwarden.storage import open_store


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("prefix")
    parser.add_argument("count", type=int)
    parser.add_argument("--shared")
    args = parser.parse_args()
    async with open_store(args.db, durability="sync") as store:
        print("ready", flush=True)
        versions = {f"{args.prefix}/{i}": await store.stream_version(f"{args.prefix}/{i}") for i in range(4)}
        for n in range(args.count):
            event = NewEvent(type="Appended", occurred_at=time.time(), payload={"n": n, "by": args.prefix})
            if args.shared and n % 2:
                result = (await store.append(args.shared, [event])).result()
            else:
                stream = f"{args.prefix}/{(n // 2 if args.shared else n) % 4}"
                result = (await store.append(stream, [event], expected_version=versions[stream])).result()
                versions[stream] = result.last_version
            sys.stdout.write(f"{result.stream} {result.last_version} {result.last_position}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
