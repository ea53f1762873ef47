"""Alembic migrations for the event store schema, shipped inside the package."""
