"""The asyncio drivers: they persist what the pure machines decide and carry out their commands.

``durable_breakers`` keeps breakers in the log; ``guard`` wraps any call in a durable breaker;
``lifecycle_driver`` runs a connection's lifecycle machine; ``recovery`` and ``recovery_actions``
climb the ladder on a worker; ``recorder`` appends a component's events in the background.
"""
