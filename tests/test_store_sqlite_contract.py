"""The store contract on SQLite: a file, and in memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from poolwarden.storage import EventStore, SQLiteEventStore
from tests.store_contract import StoreContract


class TestSQLiteFileStore(StoreContract):
    """The contract, on an SQLite file."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[..., EventStore]:
        return lambda **options: SQLiteEventStore(tmp_path / "events.db", **options)


class TestSQLiteMemoryStore(StoreContract):
    """The contract, on an in-memory SQLite database."""

    @pytest.fixture
    def make_store(self) -> Callable[..., EventStore]:
        def make(**options: Any) -> EventStore:
            return SQLiteEventStore(":memory:", **options)

        return make
