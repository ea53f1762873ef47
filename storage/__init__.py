"""The durable event store."""
