"""The store on a damaged database file: SQLite's errors become DatabaseDamaged naming the file, the
store remembers the damage, and its single writer survives a write that meets a damaged page.

The damage is real (tests/damage.py: bytes overwritten in a leaf page, in the file)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.core import alerts
from appliance.core.box import get_box
from appliance.core.chain import verify_chain
from appliance.core.config import Config
from appliance.core.devices import Device
from appliance.core.ledger import SheetSubmission, submit_sheets
from appliance.core.storage import Store
from appliance.core.watchdog import INTEGRITY_FREEZE_REASON, WatchdogSettings, apply_integrity
from appliance.shared.errors import DAMAGED_DATABASE_SECTION, DatabaseDamaged
from appliance.shared.times import now_rfc3339, utcnow
from appliance.storage.db import damage_in, is_damage_error
from tests.conftest import make_box, paired_device
from tests.damage import damage_table, store_sheets


@pytest.fixture
def scored(tmp_path: Path) -> Config:
    config = make_box(tmp_path / "box")
    store_sheets(config, 300)
    return config


@pytest.fixture
def garbage(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-database.sqlite"
    path.write_bytes(b"this is no SQLite file " * 400)
    return path


def sqlite_error(run: object) -> BaseException:
    try:
        run()  # type: ignore[operator]
    except (sqlite3.Error, MemoryError) as exc:
        return exc
    raise AssertionError("no error")


def test_damage_is_told_apart_from_busy_and_constraint_errors(scored: Config, garbage: Path) -> None:
    sound = sqlite3.connect(scored.db_path)
    sound.execute("CREATE TEMP TABLE t (a UNIQUE)")
    sound.execute("INSERT INTO t VALUES (1)")
    constraint = sqlite_error(lambda: sound.execute("INSERT INTO t VALUES (1)"))
    holder = sqlite3.connect(scored.db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    locked = sqlite_error(lambda: sqlite3.connect(scored.db_path, timeout=0).execute("BEGIN EXCLUSIVE"))
    holder.execute("ROLLBACK")
    not_a_database = sqlite_error(lambda: sqlite3.connect(garbage).execute("SELECT 1 FROM sqlite_master"))

    assert is_damage_error(not_a_database)
    assert not is_damage_error(constraint) and not is_damage_error(locked)
    assert damage_in(scored.db_path, locked) is None and damage_in(scored.db_path, constraint) is None
    # Out of memory on a sound file is not damage: a quick_check says so.
    assert damage_in(scored.db_path, MemoryError()) is None

    damage_table(scored.db_path, "sheets", "middle")
    # Reading the damaged page fails with SQLITE_CORRUPT, or runs out of memory on a damaged length:
    # either way it is damage, naming the file.
    read_error = sqlite_error(
        lambda: sqlite3.connect(scored.db_path).execute("SELECT * FROM sheets").fetchall()
    )
    damage = damage_in(scored.db_path, read_error)
    assert isinstance(damage, DatabaseDamaged) and damage.path == scored.db_path and damage.problems
    # SQLite's words stay in problems (the log, the alert); the line a person reads names the file
    # and the runbook's section instead.
    assert "malformed" not in damage.detail
    assert str(scored.db_path) in damage.detail and f'"{DAMAGED_DATABASE_SECTION}"' in damage.detail


def test_a_file_that_is_not_a_database_is_refused_when_the_store_opens(garbage: Path) -> None:
    with pytest.raises(DatabaseDamaged) as refused:
        Store(garbage)
    assert refused.value.path == garbage


def test_a_read_of_a_damaged_page_raises_database_damaged_and_tells_the_listener_once(scored: Config) -> None:
    damage_table(scored.db_path, "sheets", "middle")
    heard: list[DatabaseDamaged] = []
    with Store(scored.db_path) as store:
        store.on_damage(heard.append)
        assert store.query(get_box)["box_id"]  # pages that are sound still read
        for _ in range(2):
            with pytest.raises(DatabaseDamaged):
                store.query(lambda conn: verify_chain(conn, "sheets"))
        assert store.damaged is not None and len(heard) == 1
        assert store.query(get_box)["box_id"]  # the reader connection is usable after the error
        with pytest.raises(DatabaseDamaged):
            store.ensure_sound()


def test_ensure_sound_finds_damage_no_read_has_met(scored: Config) -> None:
    with Store(scored.db_path) as store:
        store.ensure_sound()
        assert store.damaged is None
    damage_table(scored.db_path, "sheets", "middle")
    with Store(scored.db_path) as store:
        with pytest.raises(DatabaseDamaged) as found:
            store.ensure_sound()
        assert found.value.problems and store.damaged is not None


@pytest.fixture
def damaged_head(scored: Config) -> Iterator[tuple[Store, Device, SheetSubmission]]:
    """A store whose ledger head (the newest rows, in the last leaf) is damaged, and a J1 sheet that
    a sound box would store."""
    with Store(scored.db_path) as store:
        device = paired_device(store, "J1")
        entry = store.query(
            lambda conn: conn.execute(
                "SELECT entry_id FROM panels p JOIN entries e USING (session_id)"
                " WHERE p.judge_id = 'J1' LIMIT 1"
            ).fetchone()[0]
        )
        values = store.query(lambda conn: {r[0]: r[1] for r in conn.execute("SELECT key, min FROM criteria")})
    sheet = SheetSubmission(str(uuid.uuid4()), entry, values, now_rfc3339(), None, None)
    damage_table(scored.db_path, "sheets", "last")
    with Store(scored.db_path) as store:
        yield store, device, sheet


def test_a_write_that_meets_a_damaged_page_is_refused_and_the_writer_lives_on(
    damaged_head: tuple[Store, Device, SheetSubmission],
) -> None:
    store, device, sheet = damaged_head
    heard: list[DatabaseDamaged] = []
    store.on_damage(heard.append)

    with pytest.raises(DatabaseDamaged):
        store.write_sync(lambda conn: submit_sheets(conn, [(device, sheet)]), timeout=10)
    assert len(heard) == 1 and store.damaged is not None

    # Nothing more is written to the damaged file, and the refusal is at once (no queue, no wait)...
    with pytest.raises(DatabaseDamaged):
        store.write_sync(lambda conn: get_box(conn), timeout=10)
    # ...but the writer thread is alive: the watchdog's alert and freeze still get through.
    settings = WatchdogSettings()
    problems = store.damaged.problems
    assert (
        store.write_sync(lambda conn: apply_integrity(conn, settings, problems, utcnow()), damaged_ok=True)
        is False
    )
    assert store.query(get_box)["freeze_reason"] == INTEGRITY_FREEZE_REASON
    alert = store.query(lambda conn: alerts.get_alert(conn, "db-integrity"))
    assert alert is not None and alert.active
    assert (
        store.query(
            lambda conn: conn.execute(
                "SELECT count(*) FROM sheets WHERE sheet_id = ?", (sheet.sheet_id,)
            ).fetchone()[0]
        )
        == 0
    )
