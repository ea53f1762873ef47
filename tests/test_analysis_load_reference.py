"""load_events against a plain reference loader: the same frame, value for value and dtype for dtype.

The reference reads every row with ``sqlite3`` and types each column the obvious way, one Python
value at a time; nothing of ``analysis/columns.py`` is used. The log mixes every event type the
analysis benchmark writes (breaker calls and transitions, recoveries under shared incident ids,
memory samples) with odd rows: older and newer schema versions, fences, an incident id stored as
a number, text values that are empty or hold newlines and quotes.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import poolwarden.analysis.columns as columns
import poolwarden.analysis.load as load
from poolwarden.analysis import EVENT_COLUMNS, load_events
from poolwarden.analysis.frames import CATEGORY_COLUMNS, TIME_DTYPE, string_category
from poolwarden.bench.analysis import build_log
from poolwarden.errors import CorruptDatabase
from poolwarden.pool_streams import pool_of
from poolwarden.storage.schema import EVENT_COLUMNS as TABLE_COLUMNS


def _reference(path: Path) -> pd.DataFrame:
    """The log at ``path`` typed as docs/analysis.md documents it, the slow and obvious way."""
    stored = [name for name in EVENT_COLUMNS if name != "pool"]  # pool is derived from the stream
    with sqlite3.connect(path) as connection:
        cursor = connection.execute(f"SELECT {', '.join(stored)} FROM events ORDER BY position")
        rows: dict[str, list[Any]] = {name: [] for name in stored}
        for row in cursor:
            for name, value in zip(stored, row, strict=True):
                rows[name].append(value)
    connection.close()
    rows["pool"] = [pool_of(stream) for stream in rows["stream"]]
    data: dict[str, pd.Series] = {}
    for name, values in rows.items():
        if name in ("position", "version", "schema_version"):
            data[name] = pd.Series(values, dtype="int64")
        elif name in ("occurred_at", "recorded_at"):
            micros = np.array([round(value * 1_000_000) for value in values], dtype="int64")
            data[name] = pd.Series(micros.view("datetime64[us]"), dtype=TIME_DTYPE)
        elif name in CATEGORY_COLUMNS or name in ("stream", "type", "pool"):
            data[name] = pd.Series(string_category(np.array(values, dtype=object)))
        elif name == "incident_id":
            data[name] = pd.Series([np.nan if v is None else str(v) for v in values], dtype="str")
        elif name == "latency_ms":
            data[name] = pd.Series([np.nan if v is None else v for v in values], dtype="float64")
        elif name == "fence":
            data[name] = pd.Series(values, dtype="Int64")
        else:
            data[name] = pd.Series([json.loads(v) for v in values], dtype=object)
    return pd.DataFrame({name: data[name] for name in EVENT_COLUMNS})


def _odd_rows(path: Path) -> None:
    """Append rows the benchmark's pool never writes, after its last position."""
    with sqlite3.connect(path) as connection:
        (last,) = connection.execute("SELECT max(position) FROM events").fetchone()
        first = connection.execute(f"SELECT {', '.join(TABLE_COLUMNS)} FROM events LIMIT 1").fetchone()
        template = dict(zip(TABLE_COLUMNS, first, strict=True))
        odd = [
            {"schema_version": 0, "incident_id": 7, "fence": 3},
            {"schema_version": 2, "incident_id": "inc-x", "connection_id": "", "fence": 1},
            {"schema_version": 3, "incident_id": "inc-x", "rung": 'say "ping"\nthen [wait]'},
            {"incident_id": "", "browser": "ünïcødé", "latency_ms": 0.1, "payload": '{"a":[1,{"b":null}]}'},
            {"incident_id": None, "stream": "s/odd", "type": "Odd", "payload": "{}"},
            # JSON msgspec reads differently from json.loads, or refuses (json.loads' values stand):
            {"payload": '{"big":123456789012345678901234567890,"neg":-9223372036854775809}'},
            {"payload": '{"inf":-Infinity,"huge":1e400}'},
            {"payload": '{"half":"\\ud800","dup":1,"dup":2,"f":0.30000000000000004,"z":-0.0}'},
        ]
        for offset, values in enumerate(odd, 1):
            row = {**template, "position": last + offset, "version": 10_000 + offset, **values}
            marks = ", ".join("?" * len(TABLE_COLUMNS))
            connection.execute(
                f"INSERT INTO events ({', '.join(TABLE_COLUMNS)}) VALUES ({marks})",
                [row[name] for name in TABLE_COLUMNS],
            )
    connection.close()


@pytest.fixture(scope="module")
def varied_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reference") / "varied.db"
    build_log(path, 6000, seed=3)
    _odd_rows(path)
    return path


def _assert_same(loaded: pd.DataFrame, expected: pd.DataFrame) -> None:
    # SQLite prints a REAL with 15 significant digits: latency_ms round-trips to 1e-14.
    pd.testing.assert_frame_equal(loaded.drop(columns="latency_ms"), expected.drop(columns="latency_ms"))
    pd.testing.assert_series_equal(loaded["latency_ms"], expected["latency_ms"], rtol=1e-14, atol=0)


def test_the_log_has_every_kind_of_value(varied_log: Path) -> None:
    """The fixture is as varied as it says: every benchmark type, repeated and missing incident ids."""
    expected = _reference(varied_log)
    assert set(expected["type"].astype(str)) >= {
        "CallFailed",
        "CallsSummarised",
        "BreakerOpened",
        "BreakerHalfOpened",
        "BreakerClosed",
        "RecoveryStarted",
        "RungAttempted",
        "RungSucceeded",
        "RungFailed",
        "RecoveryCompleted",
        "ConnectionQuarantined",
        "MemorySampled",
        "Odd",
    }
    assert set(expected["schema_version"]) == {0, 1, 2, 3}
    assert expected["incident_id"].isna().any()
    assert expected["incident_id"].value_counts().max() > 1
    assert expected["fence"].notna().sum() == 2


def test_load_events_equals_the_reference(varied_log: Path) -> None:
    """The chunked loader's frame is the reference's: values, dtypes, categories, column order."""
    loaded = load_events(varied_log)
    assert list(loaded.columns) == list(EVENT_COLUMNS)
    _assert_same(loaded, _reference(varied_log))


def test_small_chunks_equal_the_reference(varied_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 events into arrays grown from 16: the same frame."""
    monkeypatch.setattr(load, "CHUNK", 7)
    monkeypatch.setattr(columns, "_FIRST_CAPACITY", 16)
    _assert_same(load_events(varied_log), _reference(varied_log))


def test_without_msgspec_the_frame_is_the_same(varied_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With msgspec missing, json.loads alone decodes the payloads: the same frame."""
    monkeypatch.setattr(columns, "_fast_decoder", lambda: None)
    _assert_same(load_events(varied_log), _reference(varied_log))


def test_odd_json_keeps_json_loads_values(varied_log: Path) -> None:
    """Payloads msgspec refuses or could misread keep json.loads' values: big ints, infinity, a surrogate."""
    payloads = load_events(varied_log)["payload"].tolist()[-3:]
    assert payloads[0] == {"big": 123456789012345678901234567890, "neg": -9223372036854775809}
    assert isinstance(payloads[0]["big"], int)
    assert payloads[1] == {"inf": -np.inf, "huge": np.inf}
    assert payloads[2] == {"half": "\ud800", "dup": 2, "f": 0.30000000000000004, "z": -0.0}


def test_what_msgspec_refuses_is_json_loads_value() -> None:
    """A NaN or a raw lone surrogate (msgspec refuses both) goes to json.loads; bad JSON is still reported."""
    decoder = columns.ChunkDecoder("nan.db", expected=2)
    payloads = decoder._objects('[{"a":NaN},{"b":[1,2.5]}]', 2, "payload")
    assert np.isnan(payloads[0]["a"])
    assert payloads[1] == {"b": [1, 2.5]}
    surrogate = decoder._objects('[{"a":"\ud800"}]', 1, "payload")  # a raw lone surrogate: msgspec raises
    assert surrogate[0] == {"a": "\ud800"}
    with pytest.raises(CorruptDatabase, match="payload is not valid JSON"):
        decoder._objects('[{"a":nan}]', 1, "payload")


def test_an_incident_id_is_one_string_within_a_chunk(varied_log: Path) -> None:
    """Events of one incident share their id's string object (memory), and it is still a str."""
    loaded = load_events(varied_log)
    ids = loaded["incident_id"].dropna()
    repeated = ids[ids == ids.value_counts().index[0]]
    assert all(isinstance(value, str) for value in ids)
    assert len({id(value) for value in repeated}) < len(repeated)


def test_a_non_string_incident_id_is_converted_as_pandas_would() -> None:
    """A value that is not a string (PostgreSQL could hand one over) takes pandas' own conversion."""
    values = np.array(["inc-1", 5, np.nan], dtype=object)
    made = columns._strings(values.copy())
    pd.testing.assert_series_equal(made, pd.Series(values, dtype="str"))
    assert made.tolist()[:2] == ["inc-1", "5"]
    strings = np.array(["inc-1", np.nan], dtype=object)
    assert columns._strings(strings).dtype == "str"


@pytest.fixture(scope="module")
def gapped_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log with holes in its positions and a run of fenced events amid unfenced ones."""
    path = tmp_path_factory.mktemp("gapped") / "gapped.db"
    build_log(path, 3000, seed=4)
    with sqlite3.connect(path) as connection:
        connection.execute(
            "DELETE FROM events WHERE position IN (5, 6, 700, 2999) OR position BETWEEN 1500 AND 1530"
        )
        connection.execute("UPDATE events SET fence = position % 5 + 1 WHERE position BETWEEN 100 AND 1200")
    connection.close()
    return path


@pytest.mark.parametrize("chunk", [7, 100, 10_000])
def test_dense_and_full_chunks_equal_the_reference(
    gapped_log: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks read lean (every position there, fences all set or all NULL) or in full: the same frame."""
    kinds: list[str] = []
    dense_row = columns.dense_row

    def counted(row: Any) -> Any:
        made = dense_row(row)
        kinds.append("full" if made is None else "dense")
        return made

    monkeypatch.setattr(load, "CHUNK", chunk)
    monkeypatch.setattr(load, "dense_row", counted)
    _assert_same(load_events(gapped_log), _reference(gapped_log))
    assert "full" in kinds
    assert ("dense" in kinds) == (chunk < 3000)


def test_a_filtered_load_reads_full_chunks(gapped_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter leaves gaps: every chunk is read with the full select, and the frame is the reference's."""
    monkeypatch.setattr(load, "dense_row", lambda row: pytest.fail("a filtered load read a dense chunk"))
    expected = _reference(gapped_log)
    loaded = load_events(gapped_log, types=["CallFailed", "MemorySampled"])
    wanted = expected[expected["type"].isin(["CallFailed", "MemorySampled"])].reset_index(drop=True)
    wanted["type"] = wanted["type"].cat.remove_unused_categories()
    assert len(loaded) == len(wanted)
    pd.testing.assert_series_equal(loaded["position"], wanted["position"])
    pd.testing.assert_series_equal(loaded["fence"], wanted["fence"])
