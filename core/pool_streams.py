"""The streams and connection ids of a pool, from its name; and the pool a stream belongs to.

A pool named ``main`` (the default) writes ``pool/main`` (requests and the pool's own events),
``pool/main/bridge`` (sockets, refusals) and ``pool/main/memory``; its connections are
``conn-0``, ``conn-1``, ... with streams ``connection/conn-0`` and breaker streams
``breaker/conn-0`` and ``breaker/conn-0/<model>``. A pool of another name, ``east``, has
``pool/east...`` and connections ``east.conn-0``, ...: pool names cannot hold a dot, so no two
pools' ids meet. All of them are the pool's while it holds the lease on its name
(:mod:`poolwarden.lease`).

:func:`pool_of` reads a stream id back to its pool's name: the one rule every fleet-wide view
(``poolwarden events|breakers|telemetry|analyze --pool``, the analysis frame's ``pool`` column)
selects a pool's streams by. Pure: it is used below the pool, by telemetry and analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

from poolwarden.lease import DEFAULT_POOL_NAME, check_pool_name, is_pool_name

__all__ = ["CONNECTION_PREFIX", "PoolStreams", "pool_of", "pool_of_connection"]

CONNECTION_PREFIX = "conn-"
"""What a connection id starts with, after ``<pool>.`` for a pool not named ``main``."""

_CONNECTION_FAMILIES = ("connection", "breaker")
"""Stream families keyed by a connection id first (``connection/<id>``, ``breaker/<id>[/<model>]``)."""


def pool_of_connection(connection_id: str) -> str | None:
    """The name of the pool whose connection id this is (``conn-3`` is ``main``'s, ``east.conn-3``
    ``east``'s), or ``None`` for an id of no pool's form (a standalone named breaker's key)."""
    name, dot, rest = connection_id.partition(".")
    if not dot:
        name, rest = DEFAULT_POOL_NAME, connection_id
    return name if rest.startswith(CONNECTION_PREFIX) and is_pool_name(name) else None


def pool_of(stream: str) -> str | None:
    """The name of the pool that owns ``stream``, or ``None`` for a stream no pool owns.

    ``pool/<name>`` and the streams under it are that pool's; ``connection/<id>``,
    ``breaker/<id>`` and ``breaker/<id>/<model>`` are the pool's whose connection id ``<id>`` is
    (:func:`pool_of_connection`); anything else (a standalone breaker such as
    ``breaker/payments-api``, a tool's stream) is no pool's."""
    family, _, rest = stream.partition("/")
    first = rest.partition("/")[0]
    if family == "pool":
        return first if is_pool_name(first) else None
    if family in _CONNECTION_FAMILIES:
        return pool_of_connection(first)
    return None


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
        return CONNECTION_PREFIX if self.name == DEFAULT_POOL_NAME else f"{self.name}.{CONNECTION_PREFIX}"

    def connection_id(self, number: int) -> str:
        """The id of the pool's connection ``number``."""
        return f"{self.connection_prefix}{number}"

    def spare_id(self, number: int) -> str:
        """The worker id of the pool's warm spare browser ``number`` (never a connection's)."""
        prefix = "spare-" if self.name == DEFAULT_POOL_NAME else f"{self.name}.spare-"
        return f"{prefix}{number}"

    def owns(self, stream: str) -> bool:
        """Whether ``stream`` is one of this pool's (:func:`pool_of`): its own streams, and its
        connections' lifecycle and breaker streams (a standalone named breaker is no pool's)."""
        return pool_of(stream) == self.name
