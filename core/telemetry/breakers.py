"""What the log says of every breaker: ``poolwarden breakers --db PATH``.

For each ``breaker/...`` stream it restores the breaker from its snapshot and tail twice: as
last persisted (``state``), and as it stands now by the clock (``effective_state``: an open
breaker whose wait has passed is half-open now). Reads only.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass

from poolwarden.breaker_events import STREAM_PREFIX, key_of_stream
from poolwarden.clock import Clock, system_clock
from poolwarden.replay import restore
from poolwarden.storage import open_store

__all__ = ["BreakerStatus", "breaker_statuses"]


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """One breaker as the log left it and as it stands now."""

    key: str
    state: str
    effective_state: str
    opened_at: float | None
    retry_at: float | None
    reopen_streak: int
    version: int

    def as_dict(self) -> dict[str, object]:
        """The status as a JSON-ready dictionary."""
        return asdict(self)


async def breaker_statuses(db: str | os.PathLike[str], *, clock: Clock = system_clock) -> list[BreakerStatus]:
    """The status of every breaker recorded in the log at ``db``, by key."""
    statuses = []
    rng = random.Random()
    async with open_store(db, read_only=True) as store:
        snapshots = await store.load_snapshots(STREAM_PREFIX)
        for stream, version in (await store.streams(STREAM_PREFIX)).items():
            snapshot = snapshots.get(stream)
            start = snapshot.version + 1 if snapshot is not None else 1
            tail = await store.read_stream(stream, from_version=start)
            key = key_of_stream(stream)
            persisted = restore(key, tail, snapshot=snapshot, clock=clock, rng=rng, catch_up=False)
            now = restore(key, tail, snapshot=snapshot, clock=clock, rng=rng, catch_up=True)
            statuses.append(
                BreakerStatus(
                    key=key,
                    state=str(persisted.state),
                    effective_state=str(now.state),
                    opened_at=persisted.opened_at,
                    retry_at=persisted.retry_at,
                    reopen_streak=persisted.streak,
                    version=version,
                )
            )
    return sorted(statuses, key=lambda s: s.key)
