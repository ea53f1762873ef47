"""The streams and connection ids of a pool, from its name.

A pool named ``main`` (the default) writes ``pool/main`` (requests and the pool's own events),
``pool/main/bridge`` (sockets, refusals) and ``pool/main/memory``; its connections are
``conn-0``, ``conn-1``, ... with streams ``connection/conn-0`` and breaker streams
``breaker/conn-0`` and ``breaker/conn-0/<model>``. A pool of another name, ``east``, has
``pool/east...`` and connections ``east.conn-0``, ...: pool names cannot hold a dot, so no two
pools' ids meet. All of them are the pool's while it holds the lease on its name
(:mod:`poolwarden.lease`).
"""

from __future__ import annotations

from dataclasses import dataclass

from poolwarden.lease import DEFAULT_POOL_NAME, check_pool_name

__all__ = ["PoolStreams"]


@dataclass(frozen=True, slots=True)
class PoolStreams:
    """The stream names and connection ids of the pool called :attr:`name`."""

    name: str = DEFAULT_POOL_NAME

    def __post_init__(self) -> None:
        check_pool_name(self.name)

    @property
    def pool(self) -> str:
        """Requests served and failed, the pool's start and stop, recycling, faults."""
        return f"pool/{self.name}"

    @property
    def bridge(self) -> str:
        """Workers connecting, refused, closing; protocol violations."""
        return f"pool/{self.name}/bridge"

    @property
    def memory(self) -> str:
        """Memory readings, pressure levels and the governor's actions."""
        return f"pool/{self.name}/memory"

    @property
    def connection_prefix(self) -> str:
        """What each of the pool's connection ids starts with."""
        return "conn-" if self.name == DEFAULT_POOL_NAME else f"{self.name}.conn-"

    def connection_id(self, number: int) -> str:
        """The id of the pool's connection ``number``."""
        return f"{self.connection_prefix}{number}"

    def owns(self, stream: str) -> bool:
        """Whether ``stream`` is one of this pool's: its own streams, and its connections' lifecycle
        and breaker streams (a standalone named breaker is no pool's)."""
        if stream == self.pool or stream.startswith(self.pool + "/"):
            return True
        return stream.startswith(
            ("connection/" + self.connection_prefix, "breaker/" + self.connection_prefix)
        )
