"""Telemetry: the pool's figures, live and counted from the log.

``queries`` holds the SQL aggregates over the log; ``live`` builds the seed's telemetry from a
running pool; ``from_log`` the same from a log whose pool is gone; ``breakers`` each breaker's
state as persisted and as it stands; ``prometheus`` serves the figures to Prometheus.
"""
