"""The store on a real SQLite file: pragmas, migrations, group commit, append-only chains."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from functools import partial
from pathlib import Path

import pytest

from appliance.core import audit, chain
from appliance.core.storage import Store, create_database
from appliance.storage.db import connect


@pytest.fixture
def store(tmp_path: Path):
    path = tmp_path / "venuebox.sqlite"
    create_database(path)
    with Store(path) as s:
        yield s


def test_database_uses_wal_full_sync_foreign_keys_and_records_its_version(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    version = create_database(path)
    conn = connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version >= 1
    names = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")]
    assert names[0] == "m001_initial"
    # Running the migrations again changes nothing.
    assert create_database(path) == version


def test_a_new_database_and_its_wal_and_shm_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "venuebox.sqlite"
    before = os.umask(0)
    try:
        create_database(path)
        with Store(path) as store:
            store.write_sync(lambda c: audit.record(c, "test", "thing", {"a": 1}))
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            assert {f.name: f"{stat.S_IMODE(f.stat().st_mode):o}" for f in files} == {
                f.name: "600" for f in files
            }
    finally:
        os.umask(before)


@pytest.mark.parametrize("table", ["sheets", "audit_log"])
def test_ledger_and_audit_refuse_update_and_delete(store: Store, table: str) -> None:
    store.write_sync(lambda c: audit.record(c, "test", "thing", {"a": 1}))
    if table == "sheets":
        store.write_sync(lambda c: chain.append(c, "sheets", _sheet("s1")))
    for sql in (f"UPDATE {table} SET prev_hash = 'x'", f"DELETE FROM {table}"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.write_sync(partial(_execute, sql=sql))


def _execute(conn: sqlite3.Connection, sql: str) -> sqlite3.Cursor:
    return conn.execute(sql)


def _sheet(sheet_id: str, entry: str = "1", supersedes: str | None = None) -> dict:
    return {
        "sheet_id": sheet_id,
        "event_id": "ev",
        "entry_id": entry,
        "judge_id": "J1",
        "device_id": "d",
        "score_values": "{}",
        "comment": None,
        "submitted_at": "2026-01-01T00:00:00Z",
        "received_at": "2026-01-01T00:00:00Z",
        "supersedes": supersedes,
        "content_hash": "h",
    }


def test_a_failing_write_in_a_group_rolls_back_alone(store: Store) -> None:
    barrier = threading.Event()

    def slow(conn):
        barrier.wait(5)
        return audit.record(conn, "t", "first")["seq"]

    def failing(conn):
        audit.record(conn, "t", "doomed")
        raise ValueError("boom")

    futures = [
        store.submit(slow),
        store.submit(failing),
        store.submit(lambda c: audit.record(c, "t", "third")),
    ]
    barrier.set()
    assert futures[0].result(5) == 1
    with pytest.raises(ValueError, match="boom"):
        futures[1].result(5)
    assert futures[2].result(5)["seq"] == 2
    actions = store.query(lambda c: [r[0] for r in c.execute("SELECT action FROM audit_log ORDER BY seq")])
    assert actions == ["first", "third"]
    assert store.query(lambda c: chain.verify_chain(c, "audit_log")).ok


def test_database_refuses_a_second_original_and_a_fork(store: Store) -> None:
    store.write_sync(lambda c: chain.append(c, "sheets", _sheet("a")))
    with pytest.raises(sqlite3.IntegrityError):
        store.write_sync(lambda c: chain.append(c, "sheets", _sheet("b")))
    store.write_sync(lambda c: chain.append(c, "sheets", _sheet("c", supersedes="a")))
    with pytest.raises(sqlite3.IntegrityError):
        store.write_sync(lambda c: chain.append(c, "sheets", _sheet("d", supersedes="a")))


def test_verify_names_the_first_altered_row(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    create_database(path)
    with Store(path) as store:
        for i in range(5):
            store.write_sync(partial(chain.append, table="sheets", row=_sheet(f"s{i}", entry=str(i))))
        assert store.query(lambda c: chain.verify_chain(c, "sheets")).ok
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER sheets_no_update")
    conn.execute("UPDATE sheets SET score_values = '{\"technique\": 10}' WHERE seq = 3")
    conn.commit()
    report = chain.verify_chain(conn, "sheets")
    assert not report.ok and report.first_bad_seq == 3 and "altered" in str(report.problem)
    conn.execute("DROP TRIGGER sheets_no_delete")
    conn.execute("DELETE FROM sheets WHERE seq = 2")
    conn.commit()
    report = chain.verify_chain(conn, "sheets")
    assert report.first_bad_seq == 2 and "missing" in str(report.problem)


def test_close_checkpoints_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    create_database(path)
    store = Store(path)
    store.write_sync(lambda c: audit.record(c, "t", "x"))
    store.close()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
