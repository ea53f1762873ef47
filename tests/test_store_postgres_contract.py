"""The store contract on PostgreSQL: a fresh database of the test server for each test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from poolwarden.storage import EventStore, PostgresEventStore
from tests.store_contract import StoreContract


class TestPostgresStore(StoreContract):
    """The contract, on PostgreSQL."""

    @pytest.fixture
    def make_store(self, postgres_db: str) -> Callable[..., EventStore]:
        def make(**options: Any) -> EventStore:
            return PostgresEventStore(postgres_db, **options)

        return make
