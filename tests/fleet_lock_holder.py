"""Holds a log's write lock as a PostgreSQL store's writer does between BEGIN and COMMIT, for the
fleet partition tests (tests/test_fleet_netns.py), run on a test host.

Usage: python fleet_lock_holder.py URL (a plain ``postgresql://`` URL)

Opens a connection, begins a transaction, takes the store's write lock
(``pg_advisory_xact_lock`` of ``storage.postgres.write_lock("public")``), prints ``locked`` and
waits for a line on stdin (or to be killed).
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from poolwarden.storage.postgres import SESSION_SETTINGS, write_lock


async def main(url: str) -> None:
    conn = await asyncpg.connect(url, server_settings=SESSION_SETTINGS)  # as the store's writer
    await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({write_lock('public')})")
    print("locked", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
