"""Which pool a stream belongs to (``pool_of``), and ``PoolStreams.owns`` agreeing with it."""

from __future__ import annotations

import pytest

from poolwarden.pool_streams import PoolStreams, pool_of, pool_of_connection


@pytest.mark.parametrize(
    ("stream", "pool"),
    [
        ("pool/main", "main"),
        ("pool/main/bridge", "main"),
        ("pool/east/memory", "east"),
        ("connection/conn-0", "main"),
        ("breaker/conn-0/toy-mlp", "main"),
        ("connection/east.conn-2", "east"),
        ("breaker/east.conn-1", "east"),
        ("breaker/east.conn-1/model.v2", "east"),
        # a pool name may not start like main's connection ids: such a stream is nobody's
        ("connection/conn-x.conn-0", None),
        ("breaker/conn-x.conn-0/toy-mlp", None),
        ("connection/connx.conn-0", "connx"),
        # no pool's: standalone named breakers, other families, malformed names
        ("breaker/payments-api", None),
        ("breaker/east.payments", None),
        ("connection/Bad.conn-0", None),
        ("pool/", None),
        ("pool/Main", None),
        ("tool/conn-0", None),
        ("poolish/main", None),
    ],
)
def test_pool_of(stream: str, pool: str | None) -> None:
    assert pool_of(stream) == pool
    for name in ("main", "east", "connx"):
        assert PoolStreams(name).owns(stream) == (pool == name), name


def test_a_pool_s_own_ids_read_back_to_it() -> None:
    for name in ("main", "east", "connx"):
        streams = PoolStreams(name)
        conn = streams.connection_id(3)
        assert pool_of_connection(conn) == name
        for stream in (
            streams.pool,
            streams.bridge,
            streams.memory,
            f"connection/{conn}",
            f"breaker/{conn}/m",
        ):
            assert pool_of(stream) == name, stream
