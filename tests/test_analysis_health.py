"""pool_health on hand-built logs: how long the pool was degraded, with known answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd

from poolwarden.analysis import empty_events, load_events, pool_health
from poolwarden.analysis.health import HEALTH_COLUMNS
from poolwarden.events import NewEvent
from tests.analysis_scenario import T0, write_events


def _moved(connection: str, at: float, before: str, after: str) -> tuple[str, NewEvent]:
    return f"connection/{connection}", NewEvent(
        type="StateChanged",
        occurred_at=T0 + at,
        connection_id=connection,
        from_state=before,
        to_state=after,
    )


def _load(tmp_path: Path, events: list[tuple[str, NewEvent]]) -> pd.DataFrame:
    path = tmp_path / "log.db"
    asyncio.run(write_events(path, events))
    return load_events(path)


def _rows(table: pd.DataFrame) -> list[tuple[float, float, int, int, bool]]:
    return [
        ((r.start.timestamp() - T0), (r.end.timestamp() - T0), r.healthy, r.expected, r.degraded)
        for r in table.itertuples()
    ]


def test_degraded_while_a_connection_recovers_not_while_the_pool_starts(tmp_path: Path) -> None:
    """Starting up is not degraded; a ping and a restart are, for exactly as long as they last."""
    df = _load(
        tmp_path,
        [
            _moved("a", 0, "starting", "healthy"),
            _moved("b", 1, "starting", "healthy"),
            _moved("a", 10, "healthy", "pinging"),
            _moved("a", 12, "pinging", "healthy"),
            _moved("b", 20, "healthy", "restarting"),
            _moved("b", 25, "restarting", "healthy"),
            _moved("a", 30, "healthy", "healthy"),  # the log's last event, at T0 + 30
        ],
    )
    assert _rows(pool_health(df)) == [
        (0.0, 1.0, 1, 1, False),
        (1.0, 10.0, 2, 2, False),
        (10.0, 12.0, 1, 2, True),
        (12.0, 20.0, 2, 2, False),
        (20.0, 25.0, 1, 2, True),
        (25.0, 30.0, 2, 2, False),
    ]
    table = pool_health(df)
    assert table.loc[table["degraded"], "duration"].sum() == pd.Timedelta(seconds=7)


def test_closing_on_purpose_is_not_degraded_but_a_quarantine_is_until_replaced(tmp_path: Path) -> None:
    """A CLOSED connection lowers what is expected; a FAILED one does not, until a new one serves."""
    df = _load(
        tmp_path,
        [
            _moved("a", 0, "starting", "healthy"),
            _moved("b", 0, "starting", "healthy"),
            _moved("a", 5, "healthy", "failed"),
            _moved("c", 9, "starting", "healthy"),  # a's replacement
            _moved("b", 15, "healthy", "closed"),
            _moved("c", 20, "healthy", "healthy"),
        ],
    )
    assert _rows(pool_health(df)) == [
        (0.0, 5.0, 2, 2, False),
        (5.0, 9.0, 1, 2, True),
        (9.0, 15.0, 2, 2, False),
        (15.0, 20.0, 1, 1, False),
    ]


def test_an_empty_log_gives_an_empty_frame_with_the_columns() -> None:
    """No lifecycle events: no rows, the same columns and dtypes."""
    table = pool_health(empty_events())
    assert table.empty
    assert dict(table.dtypes) == HEALTH_COLUMNS
