"""Code above the store names only the interface and the factory, never a backend class."""

from __future__ import annotations

from pathlib import Path

from poolwarden.storage import EventStore, SQLiteEventStore, open_store

ROOT = Path(__file__).resolve().parent.parent


def test_no_code_above_storage_names_a_backend_class() -> None:
    """core/ and analysis/ reach the store through EventStore and open_store only."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("core", "analysis")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if any(
            name in path.read_text(encoding="utf-8") for name in ("SQLiteEventStore", "PostgresEventStore")
        )
    ]
    assert offenders == []


async def test_open_store_opens_a_log_read_only(tmp_path: Path) -> None:
    """open_store(path, read_only=True) is the factory readers use; it reads, and never writes."""
    target = tmp_path / "events.db"
    async with open_store(target):
        pass
    reader = open_store(target, read_only=True)
    assert isinstance(reader, EventStore)
    assert isinstance(reader, SQLiteEventStore)
    assert reader.read_only
    async with reader as store:
        assert await store.fetch("SELECT COUNT(*) FROM events") == [(0,)]
