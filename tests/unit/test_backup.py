"""Encrypted snapshots on real files: take, verify, keep, restore; the keys behind them."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyrage
import pytest
from pyrage import x25519

from appliance import backup, data_key, keys, personal, personal_fields
from appliance.config import Config, load_config
from appliance.storage.db import Store
from tests.conftest import make_box, paired_device
from tests.personal_package import personal_package


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_box(tmp_path / "box", backup_dir=str(tmp_path / "backups"))


def score(config: Config, sheets: int = 3) -> None:
    from appliance.ledger import SheetSubmission, submit_sheets

    with Store(config.db_path) as store:
        device = paired_device(store, "J1")
        entries = store.query(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT e.entry_id FROM entries e JOIN panels p ON p.session_id = e.session_id"
                    " WHERE p.judge_id = 'J1' ORDER BY e.entry_id"
                )
            ]
        )
        items = [
            (
                device,
                SheetSubmission(
                    sheet_id=f"00000000-0000-4000-8000-{i:012d}",
                    entry_id=entries[i],
                    values={"technique": 9.0, "performance": 8.5, "choreography": 8.0},
                    submitted_at="2026-03-14T10:42:07-05:00",
                ),
            )
            for i in range(sheets)
        ]
        store.write_sync(lambda c: submit_sheets(c, items))


def table_rows(path: Path, table: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
    finally:
        conn.close()


def test_a_snapshot_is_encrypted_recorded_and_verifies(config: Config) -> None:
    score(config)
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
        assert taken.path.parent == config.backup_path and taken.path.name.endswith(".sqlite.age")
        assert taken.path.read_bytes().startswith(b"age-encryption.org/v1")
        assert b"SQLite format 3" not in taken.path.read_bytes()
        assert taken.facts["ledger_rows"] == 3 and taken.facts["row_counts"]["sheets"] == 3
        assert backup.verify_job(config, store) == [(taken.name, [])]
        [row] = store.query(backup.list_snapshots)
    assert row["verify_ok"] == 1 and row["sha256"] == taken.sha256
    assert (config.backup_path / backup.KEYS_FILE).exists()
    assert not list(config.backup_path.glob("*.tmp")) and not list(config.backup_path.glob(".snapshot-*"))


def test_a_changed_snapshot_does_not_verify_and_raises_a_critical_alert(config: Config) -> None:
    from appliance import alerts

    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
        data = bytearray(taken.path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        taken.path.write_bytes(bytes(data))
        [(name, problems)] = backup.verify_job(config, store)
        assert name == taken.name and "changed since it was written" in problems[0]
        [alert] = [
            a for a in store.query(alerts.list_alerts) if a["fingerprint"] == backup.VERIFY_FINGERPRINT
        ]
    assert alert["severity"] == "critical"


def test_retention_keeps_the_newest_and_one_per_clock_hour() -> None:
    now = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
    # Every 15 minutes for 30 hours, newest first: s0 (12:00), s1 (11:45), ...
    made = [(f"s{i}", now - timedelta(minutes=15 * i)) for i in range(120)]
    keep = backup.retained(made, now, keep_last=8, hourly_h=24)
    # The newest of each clock hour 13:00 the day before .. 12:00: 12:00 (s0), 11:45 (s1), 10:45 (s5), ...
    newest_of_each_hour = {"s0"} | {f"s{4 * h - 3}" for h in range(1, 24)}
    assert keep == {f"s{i}" for i in range(8)} | newest_of_each_hour
    assert len(keep) == 8 + 24 - 3  # s0, s1 and s5 (10:45) are among the newest eight too
    assert backup.retained(made[:3], now, keep_last=8, hourly_h=24) == {"s0", "s1", "s2"}
    assert backup.retained(made, now, keep_last=1, hourly_h=0) == {"s0"}


def test_retention_over_a_day_of_passes_keeps_an_hourly_snapshot_for_24_hours() -> None:
    """What the daemon does: a snapshot every 15 minutes, retention after each one."""
    start = datetime(2026, 3, 14, 0, 5, tzinfo=UTC)
    kept: list[tuple[str, datetime]] = []
    for i in range(4 * 30):  # 30 hours
        at = start + timedelta(minutes=15 * i)
        kept.append((f"s{i}", at))
        names = backup.retained(kept, at, keep_last=8, hourly_h=24)
        kept = [(name, when) for name, when in kept if name in names]
    hours = sorted({when.replace(minute=0) for _, when in kept})
    assert len(hours) == 24 and hours[-1] - hours[0] == timedelta(hours=23)
    assert len(kept) == 8 + 24 - 2  # the newest 8 span 2 clock hours that also count as hourly
    newest = max(when for _, when in kept)
    assert all(newest - when < timedelta(hours=24) for _, when in kept)


def test_retention_deletes_the_files_it_does_not_keep(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", backup_keep_last=2, backup_keep_hourly_h=0)
    with Store(config.db_path) as store:
        start = datetime.now(UTC) - timedelta(minutes=10)
        taken = [backup.snapshot_job(config, store, start + timedelta(minutes=i)) for i in range(4)]
        kept = store.query(backup.list_snapshots)
    assert [r["name"] for r in kept] == [taken[3].name, taken[2].name]
    on_disk = sorted(p.name for p in config.backup_path.glob("snapshot-*"))
    assert on_disk == sorted([taken[2].name, taken[3].name])


def test_restore_round_trip_is_equal_and_brings_the_keys_back(config: Config, tmp_path: Path) -> None:
    score(config, 5)
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
    target = tmp_path / "restored"
    done = backup.restore(taken.path, target, [keys.box_identity(config)])
    assert done.ledger_rows == 5 and done.keys_restored
    assert done.ledger_head == taken.facts["ledger_head"]
    assert table_rows(target / "venuebox.sqlite", "sheets") == table_rows(config.db_path, "sheets")
    assert (target / "personal-data.key").read_text() == config.data_key_path.read_text()
    assert (target / "admin.token").read_text() != config.admin_token_path.read_text()
    restored = load_config(target, environ={})
    assert (
        keys.box_identity(restored).to_public().__str__() == keys.box_identity(config).to_public().__str__()
    )


def test_restore_never_writes_over_an_existing_data_dir(config: Config) -> None:
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
    before = config.db_path.read_bytes()
    with pytest.raises(backup.BackupFailed, match="not empty"):
        backup.restore(taken.path, config.data_dir, [keys.box_identity(config)])
    assert config.db_path.read_bytes() == before


def test_the_wrong_key_is_refused_in_plain_words_and_leaves_nothing(config: Config, tmp_path: Path) -> None:
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
    with pytest.raises(backup.BackupFailed, match="could not be decrypted"):
        backup.restore(taken.path, tmp_path / "new", [x25519.Identity.generate()])
    assert not (tmp_path / "new").exists()


def test_an_organiser_key_and_a_passphrase_each_open_the_backups(config: Config, tmp_path: Path) -> None:
    organiser = x25519.Identity.generate()
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse battery staple\n")
    keys.configure(config, [str(organiser.to_public())], secret)
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
    by_key = tmp_path / "by-key"
    backup.restore(taken.path, by_key, [organiser])
    by_passphrase = backup.load_identity(None, secret, taken.path, None)
    backup.restore(taken.path, tmp_path / "by-passphrase", by_passphrase)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase at all\n")
    with pytest.raises(backup.BackupFailed, match="wrong passphrase"):
        backup.load_identity(None, wrong, taken.path, None)


def test_bad_backup_keys_are_refused_before_anything_is_written(config: Config, tmp_path: Path) -> None:
    with pytest.raises(keys.BadBackupKey, match="age X25519 public key"):
        keys.configure(config, ["ssh-ed25519 AAAA"], None)
    short = tmp_path / "short"
    short.write_text("tooshort\n")
    with pytest.raises(keys.BadBackupKey, match="at least 12"):
        keys.configure(config, [], short)
    assert keys.organiser_recipients(config) == []
    assert keys.passphrase(config) is None


def bundled_data_key(path: Path, identities: list[x25519.Identity]) -> bytes:
    bundle = json.loads(pyrage.decrypt(path.read_bytes(), identities))
    return base64.b64decode(bundle["personal_data_key"])


def test_after_a_key_rotation_every_snapshot_restores_with_the_key_that_sealed_it(tmp_path: Path) -> None:
    config = make_box(
        tmp_path / "box",
        package=personal_package(tmp_path / "package"),
        backup_dir=str(tmp_path / "backups"),
    )
    old = personal.load_key(config.data_key_path)
    start = datetime.now(UTC)
    with Store(config.db_path) as store:
        before = backup.snapshot_job(config, store, start)
        rotation = data_key.rotate(config, store, "test")
        after = backup.snapshot_job(config, store, start + timedelta(minutes=1))
    new = personal.load_key(config.data_key_path)
    identities = [keys.box_identity(config)]

    # keys.age beside the snapshots now carries the new key; the rotation kept the old one for the
    # snapshots taken before it.
    assert rotation.kept_for_backups == config.backup_path / f"keys-{data_key.key_id(old)}.age"
    assert bundled_data_key(config.backup_path / backup.KEYS_FILE, identities) == new
    assert bundled_data_key(rotation.kept_for_backups, identities) == old
    for taken, key, keys_file in ((before, old, rotation.kept_for_backups.name), (after, new, "keys.age")):
        target = tmp_path / f"restored-{taken.name}"
        done = backup.restore(taken.path, target, identities)
        assert (done.keys_file, done.personal_data_opens) == (keys_file, True)
        assert personal.load_key(target / "personal-data.key") == key
        with Store(target / "venuebox.sqlite") as restored:
            names = restored.query(
                data_key.with_key(
                    target / "personal-data.key",
                    lambda conn, key: personal_fields.value(conn, key, "101", "participants"),
                )
            )
        assert names == ["Naomi Roy"]
