"""``poolwarden db``: current, upgrade, check; bad files give one clear line and a non-zero exit."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from poolwarden.cli import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolwarden", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_upgrade_then_current_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """upgrade creates the file at head; current and check then report it healthy with exit 0."""
    db = str(tmp_path / "events.db")
    assert main(["db", "upgrade", "--db", db]) == 0
    assert "upgraded from (new file) to 0003" in capsys.readouterr().out
    assert main(["db", "upgrade", "--db", db]) == 0
    assert "already at revision 0003" in capsys.readouterr().out
    assert main(["db", "current", "--db", db]) == 0
    assert "revision 0003, code head 0003: current" in capsys.readouterr().out
    assert main(["db", "check", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "integrity: ok" in out
    assert "tables: match the code's schema" in out


@pytest.mark.parametrize(
    ("damage", "found"),
    [
        ("DROP TABLE events", "table events is missing"),
        ("DROP TABLE snapshots", "table snapshots is missing"),
        ("ALTER TABLE events DROP COLUMN rung", "column events.rung is missing"),
        ("CREATE TABLE stray (x INTEGER)", "table stray is not in the code's schema"),
    ],
)
def test_check_reports_tables_that_differ_from_the_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, found: str
) -> None:
    """A file at the head revision whose tables were changed by hand fails db check, which names
    the difference (the integrity check alone passes such a file)."""
    db = str(tmp_path / "events.db")
    assert main(["db", "upgrade", "--db", db]) == 0
    with sqlite3.connect(db) as raw:
        raw.execute(damage)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    capsys.readouterr()
    assert main(["db", "check", "--db", db]) == 1
    out = capsys.readouterr().out
    assert "revision 0003, code head 0003: current" in out
    assert found in out


def test_current_does_not_create_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """db current on a missing file says so and creates nothing."""
    db = tmp_path / "missing.db"
    assert main(["db", "current", "--db", str(db)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not db.exists()


def test_check_fails_on_an_outdated_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """db check exits non-zero when the schema is not at head."""
    db = tmp_path / "events.db"
    assert main(["db", "upgrade", "--db", str(db)]) == 0
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0001'")
    capsys.readouterr()
    assert main(["db", "check", "--db", str(db)]) == 1
    assert "outdated" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing-folder", "does not exist"),
        ("not-sqlite", "is not an SQLite database"),
    ],
)
def test_bad_files_give_one_line_and_no_traceback(tmp_path: Path, setup: str, message: str) -> None:
    """A missing folder or a file that is not SQLite: one line naming the file, exit 1, no traceback."""
    if setup == "missing-folder":
        db = tmp_path / "nowhere" / "events.db"
    else:
        db = tmp_path / "notes.txt"
        db.write_text("not a database\n" * 20)
    for action in ("current", "upgrade", "check"):
        done = _run("db", action, "--db", str(db))
        assert done.returncode == 1, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert str(db) in lines[0]
        assert message in lines[0]
        assert "Traceback" not in done.stderr


def test_check_reports_corruption(tmp_path: Path) -> None:
    """db check on a damaged file lists the problems and exits 1."""
    db = tmp_path / "events.db"
    assert main(["db", "upgrade", "--db", str(db)]) == 0
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE filler (x TEXT)")
        raw.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(200)])
        raw.execute("CREATE INDEX ix_filler ON filler (x)")
        raw.commit()
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    with db.open("r+b") as f:
        for page in range(4, db.stat().st_size // page_size, 3):
            f.seek(page * page_size + 100)
            f.write(b"\x00\xff" * 200)
    done = _run("db", "check", "--db", str(db))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "integrity: ok" not in done.stdout
    assert "problem" in done.stdout or "malformed" in done.stderr


def test_leases_lists_who_holds_which_pool_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`db leases` names each pool's holder and whether the lease is held, expired or released."""
    import asyncio

    from poolwarden.storage import open_store

    db = str(tmp_path / "events.db")

    async def hold() -> None:
        async with open_store(db) as store:
            await store.take_lease("main", "host-a:10:99", ttl=3600.0)
            done = await store.take_lease("east", "host-b:11:98", ttl=3600.0)
            await store.release_lease(done)

    asyncio.run(hold())
    assert main(["db", "leases", "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "east: fence 2, holder host-b:11:98: released"
    assert out[1].startswith("main: fence 1, holder host-a:10:99: held, expires in ")
    assert 3500 < float(out[1].split("expires in ")[1].split()[0]) <= 3600
