"""Post-mortem analysis of the event log in pandas.

>>> df = load_events("poolwarden.db")                      # doctest: +SKIP
>>> recovery_success_rates(df, by=("rung", "browser"))    # doctest: +SKIP

Everything here reads the log, never the running system; every function returns a DataFrame,
empty (with the same columns and dtypes) when the log holds nothing of its kind.
"""

from poolwarden.analysis.chain import incident_chain
from poolwarden.analysis.fleet import pool_summary
from poolwarden.analysis.frames import EVENT_COLUMNS, empty_events
from poolwarden.analysis.health import pool_health
from poolwarden.analysis.load import load_events
from poolwarden.analysis.rates import error_rates, failure_counts, latency_percentiles, memory_samples
from poolwarden.analysis.recovery import incidents, mtbf, mttr, recovery_success_rates
from poolwarden.analysis.report import main_analyze, write_report
from poolwarden.analysis.timeline import breaker_timeline, connection_timeline
from poolwarden.analysis.whatif import recorded_events, whatif

__all__ = [
    "EVENT_COLUMNS",
    "breaker_timeline",
    "connection_timeline",
    "empty_events",
    "error_rates",
    "failure_counts",
    "incident_chain",
    "incidents",
    "latency_percentiles",
    "load_events",
    "main_analyze",
    "memory_samples",
    "mtbf",
    "mttr",
    "pool_health",
    "pool_summary",
    "recorded_events",
    "recovery_success_rates",
    "whatif",
    "write_report",
]
