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

from appliance.core import backup, data_key, keys, keys_bundle, personal, personal_fields, recovery
from appliance.core.config import Config, load_config
from appliance.core.storage import Store
from tests.conftest import make_box, paired_device
from tests.personal_package import personal_package


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "backups").mkdir()  # a configured backup dir is a disk the tech mounted: never made
    return make_box(tmp_path / "box", backup_dir=str(tmp_path / "backups"))


def score(config: Config, sheets: int = 3) -> None:
    from appliance.core.ledger import SheetSubmission, submit_sheets

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
    assert (config.backup_path / keys_bundle.KEYS_FILE).exists()
    assert not list(config.backup_path.glob("*.tmp")) and not list(config.backup_path.glob(".snapshot-*"))


def test_a_changed_snapshot_does_not_verify_and_raises_a_critical_alert(config: Config) -> None:
    from appliance.core import alerts

    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
        data = bytearray(taken.path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        taken.path.write_bytes(bytes(data))
        [(name, problems)] = backup.verify_job(config, store)
        assert name == taken.name and "changed since it was written" in problems[0]
        [alert] = [a for a in store.query(alerts.list_alerts) if a.fingerprint == backup.VERIFY_FINGERPRINT]
    assert alert.severity == "critical"


def test_retention_keeps_the_newest_and_one_per_clock_hour() -> None:
    now = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
    # Every 15 minutes for 30 hours, newest first: s0 (12:00), s1 (11:45), ...
    made = [(f"s{i}", now - timedelta(minutes=15 * i), True) for i in range(120)]
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
    kept: list[tuple[str, datetime, bool | None]] = []
    for i in range(4 * 30):  # 30 hours
        at = start + timedelta(minutes=15 * i)
        kept.append((f"s{i}", at, True))
        names = backup.retained(kept, at, keep_last=8, hourly_h=24)
        kept = [item for item in kept if item[0] in names]
    hours = sorted({when.replace(minute=0) for _, when, _ in kept})
    assert len(hours) == 24 and hours[-1] - hours[0] == timedelta(hours=23)
    assert len(kept) == 8 + 24 - 2  # the newest 8 span 2 clock hours that also count as hourly
    newest = max(when for _, when, _ in kept)
    assert all(newest - when < timedelta(hours=24) for _, when, _ in kept)


def test_retention_deletes_the_files_it_does_not_keep(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", backup_keep_last=2, backup_keep_hourly_h=0)
    with Store(config.db_path) as store:
        start = datetime.now(UTC) - timedelta(minutes=10)
        taken = []
        for i in range(4):  # as the daemon does: each snapshot verified before the next one is taken
            taken.append(backup.snapshot_job(config, store, start + timedelta(minutes=i)))
            backup.verify_job(config, store)
        # Retention ran when taken[3] was new, not verified yet: it counted only the two verified.
        assert [r["name"] for r in store.query(backup.list_snapshots)] == [t.name for t in taken[:0:-1]]
        assert backup.apply_retention(config, store, start + timedelta(minutes=5)) == [taken[1].name]
        kept = store.query(backup.list_snapshots)
    assert [r["name"] for r in kept] == [taken[3].name, taken[2].name]
    on_disk = sorted(p.name for p in config.backup_path.glob("snapshot-*.sqlite.age"))
    assert on_disk == sorted([taken[2].name, taken[3].name])
    # Each snapshot's keys bundle goes with it.
    bundles = sorted(p.name for p in config.backup_path.glob("snapshot-*.keys.age"))
    assert bundles == sorted(keys_bundle.bundle_name(name) for name in on_disk)


def test_restore_round_trip_is_equal_and_brings_the_keys_back(config: Config, tmp_path: Path) -> None:
    score(config, 5)
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
    target = tmp_path / "restored"
    done = recovery.restore(taken.path, target, [keys.box_identity(config)]).restored
    assert done.ledger_rows == 5 and done.keys_restored
    assert done.ledger_head == taken.facts["ledger_head"]
    assert table_rows(target / "venuebox.sqlite", "sheets") == table_rows(config.db_path, "sheets")
    assert (target / "personal-data.key").read_text() == config.data_key_path.read_text()
    # The identity travels (issue 15): the same admin token and TLS pair, each 0600.
    assert (target / "admin.token").read_text() == config.admin_token_path.read_text()
    assert (target / "tls" / "box.pem").read_bytes() == (config.data_dir / "tls" / "box.pem").read_bytes()
    for secret in ("admin.token", "personal-data.key", "tls/box.pem", keys.SIGNING_KEY, keys.IDENTITY):
        assert (target / secret).stat().st_mode & 0o777 == 0o600, secret
    assert done.identity_file == keys_bundle.bundle_name(taken.name)
    restored = load_config(target, environ={})
    assert (
        keys.box_identity(restored).to_public().__str__() == keys.box_identity(config).to_public().__str__()
    )


def test_restore_brings_back_an_uplink_set_by_the_settings_and_who_opens_the_backups(
    config: Config, tmp_path: Path
) -> None:
    from appliance.core.uplink_state import resolve_target
    from appliance.shared.secrets_files import read_secret, write_secret
    from appliance.storage.db import connect

    settings = config.data_dir / "venuebox.toml"
    settings.write_text(settings.read_text() + 'uplink_url = "https://cloud.example.org"\n')
    config = load_config(config.data_dir, environ={})
    write_secret(config.uplink_token_path, "the-uplink-token")
    organiser = x25519.Identity.generate()
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse battery staple\n")
    keys.configure(config, [str(organiser.to_public())], secret)
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
    target = tmp_path / "restored"
    done = recovery.restore(taken.path, target, [organiser]).restored
    assert done.identity is not None and done.identity.uplink is not None
    assert (done.identity.uplink.source, done.identity.uplink.url) == ("config", "https://cloud.example.org")
    assert done.identity.uplink_note is None and done.identity.backup_dir == str(config.backup_path)
    restored = load_config(target, environ={})
    assert settings.read_text() == (target / "venuebox.toml").read_text()
    conn = connect(restored.db_path, readonly=True)
    try:
        uplink = resolve_target(conn, restored)
    finally:
        conn.close()
    assert uplink is not None and uplink.token_file == target / "uplink.token"
    assert read_secret(uplink.token_file) == "the-uplink-token"
    # Who opens the backups comes back too: new snapshots still open with the organiser key. The
    # passphrase, a person's words, never travels in the keys file: it is set again by hand.
    assert keys.organiser_recipients(restored) == [str(organiser.to_public())]
    assert keys.passphrase(restored) is None
    bundle = taken.path.with_name(taken.name.replace(".sqlite.age", ".keys.age"))
    opened = pyrage.decrypt(bundle.read_bytes(), [organiser]).decode()
    assert "the-uplink-token" in opened and "correct horse battery staple" not in opened


def test_restore_never_writes_over_an_existing_data_dir(config: Config) -> None:
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
    before = config.db_path.read_bytes()
    with pytest.raises(backup.BackupFailed, match="not empty"):
        recovery.restore(taken.path, config.data_dir, [keys.box_identity(config)])
    assert config.db_path.read_bytes() == before


def test_the_wrong_key_is_refused_in_plain_words_and_leaves_nothing(config: Config, tmp_path: Path) -> None:
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
    with pytest.raises(backup.BackupFailed, match="could not be decrypted"):
        recovery.restore(taken.path, tmp_path / "new", [x25519.Identity.generate()])
    assert not (tmp_path / "new").exists()


def test_an_organiser_key_and_a_passphrase_each_open_the_backups(config: Config, tmp_path: Path) -> None:
    organiser = x25519.Identity.generate()
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse battery staple\n")
    keys.configure(config, [str(organiser.to_public())], secret)
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
    by_key = tmp_path / "by-key"
    recovery.restore(taken.path, by_key, [organiser])
    by_passphrase = backup.load_identity(None, secret, taken.path, None)
    recovery.restore(taken.path, tmp_path / "by-passphrase", by_passphrase)
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
    (tmp_path / "backups").mkdir()
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
    assert bundled_data_key(config.backup_path / keys_bundle.KEYS_FILE, identities) == new
    assert bundled_data_key(rotation.kept_for_backups, identities) == old
    # Each snapshot's own keys bundle has the key that sealed it; without them (snapshots taken
    # before bundles were written per snapshot), keys.age or the kept keys-<old key id>.age.
    own = {taken.name: keys_bundle.bundle_name(taken.name) for taken in (before, after)}
    cases = [(before, old, own[before.name]), (after, new, own[after.name])]
    cases += [(before, old, rotation.kept_for_backups.name), (after, new, "keys.age")]
    for i, (taken, key, keys_file) in enumerate(cases):
        if i == 2:
            for name in own.values():
                (config.backup_path / name).unlink()
        target = tmp_path / f"restored-{i}"
        done = recovery.restore(taken.path, target, identities).restored
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


# -- retention and verification: only what verified counts ------------------------------------------

T0 = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_retention_counts_only_verified_snapshots_keeps_unverified_and_the_newest_failed() -> None:
    made = [
        ("v1", at(0), True),
        ("v2", at(15), True),
        ("v3", at(30), True),
        ("f1", at(45), False),
        ("v4", at(60), True),
        ("f2", at(75), False),
        ("f3", at(90), False),
        ("u1", at(105), None),
        ("u2", at(120), None),
    ]
    keep = backup.retained(made, at(120), keep_last=2, hourly_h=0)
    # The two newest verified (the failed and unverified ones between them count for nothing), every
    # unverified one, and the newest failed one; v1, v2, f1 and f2 go.
    assert keep == {"v4", "v3", "u1", "u2", "f3"}
    # Hourly: each hour's newest *verified* one, even when a failed one is newer in that hour.
    hourly = backup.retained(made, at(120), keep_last=1, hourly_h=24)
    assert hourly == {"v4", "v3", "u1", "u2", "f3"}  # 12:00 -> v3 (f1 fails), 13:00 -> v4
    assert backup.retained([("f1", at(0), False), ("f2", at(1), False)], at(1), 8, 24) == {"f2"}
    assert backup.retained([], at(0), 8, 24) == set()


@pytest.mark.parametrize("failing", [0, 1, 2, 3, 10, 100])
def test_keep_last_2_never_pushes_out_a_verified_snapshot_followed_by_failing_ones(failing: int) -> None:
    """As the daemon runs: each new snapshot is unverified when retention runs after it, then its
    check fails; the good one before them stays, whatever their number."""
    kept: list[tuple[str, datetime, bool | None]] = [("good", at(0), True)]
    for i in range(1, failing + 1):
        kept.append((f"bad{i}", at(15 * i), None))
        names = backup.retained(kept, at(15 * i), keep_last=2, hourly_h=0)
        assert "good" in names and f"bad{i}" in names
        kept = [(name, when, False if name == f"bad{i}" else ok) for name, when, ok in kept if name in names]
        # Bounded: the good one, the newest failed one (and the new one until it is checked).
        assert len(kept) <= 3
    assert backup.retained(kept, at(15 * failing), keep_last=2, hourly_h=0) == {"good"} | (
        {f"bad{failing}"} if failing else set()
    )
    # keep_last is never below 1 in a config, but the newest verified one is kept even with 0.
    assert "good" in backup.retained(kept, at(15 * failing), keep_last=0, hourly_h=0)


def test_a_run_of_unverified_snapshots_pushes_nothing_out() -> None:
    made = [("v1", at(0), True), ("v2", at(1), True)] + [(f"u{i}", at(2 + i), None) for i in range(20)]
    keep = backup.retained(made, at(30), keep_last=2, hourly_h=0)
    assert keep == {"v1", "v2"} | {f"u{i}" for i in range(20)}


def test_a_configured_backup_dir_that_is_missing_is_never_made_and_the_alert_says_what_to_do(
    tmp_path: Path,
) -> None:
    from appliance.core import alerts

    stick = tmp_path / "usb" / "venuebox-backups"  # the stick is unplugged: its folder is gone
    config = make_box(tmp_path / "box", backup_dir=str(stick))
    with Store(config.db_path) as store:
        with pytest.raises(backup.BackupDirMissing, match="is missing: plug its disk back in"):
            backup.snapshot_job(config, store)
        [alert] = [a for a in store.query(alerts.list_alerts) if a.fingerprint == backup.SNAPSHOT_FINGERPRINT]
    assert not stick.exists() and not stick.parent.exists()
    assert alert.severity == "critical"
    assert "the directory is missing" in alert.detail
    assert "Plug the backup disk back in" in alert.detail
    assert "`venuebox backup configure --dir PATH`" in alert.detail


def test_a_snapshot_taken_before_the_disk_was_unplugged_is_not_judged_while_it_is_gone(
    config: Config,
) -> None:
    with Store(config.db_path) as store:
        taken = backup.snapshot_job(config, store)
        config.backup_path.rename(config.backup_path.with_name("unplugged"))
        [(name, problems)] = backup.verify_job(config, store)
        assert name == taken.name and "is missing: plug its disk back in" in problems[0]
        [row] = store.query(backup.unverified)  # no verdict recorded
        assert row["name"] == taken.name
        config.backup_path.with_name("unplugged").rename(config.backup_path)
        assert backup.verify_job(config, store) == [(taken.name, [])]


def test_moving_the_backup_dir_leaves_the_old_snapshots_alone(tmp_path: Path) -> None:
    """Snapshots in the old dir are neither deleted, counted, nor judged missing from the new one."""
    import msgspec

    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    config = make_box(tmp_path / "box", backup_dir=str(old_dir), backup_keep_last=2, backup_keep_hourly_h=0)
    moved = msgspec.structs.replace(config, backup_dir=str(new_dir))
    start = datetime.now(UTC)
    with Store(config.db_path) as store:
        old = [backup.snapshot_job(config, store, start + timedelta(minutes=i)) for i in range(2)]
        backup.verify_job(config, store)
        pending = backup.snapshot_job(config, store, start + timedelta(minutes=2))  # not verified yet
        new = []
        for i in range(3, 7):
            new.append(backup.snapshot_job(moved, store, start + timedelta(minutes=i)))
            # The old dir's unverified snapshot is not reported missing from the new dir.
            assert [name for name, _ in backup.verify_job(moved, store)] == [new[-1].name]
        backup.apply_retention(moved, store, start + timedelta(minutes=7))  # the newest is verified now
        backup.apply_retention(config, store, start + timedelta(minutes=7))  # and back: nothing goes
        rows = {r["name"]: r for r in store.query(backup.list_snapshots)}
        view = store.query(lambda conn: backup.backup_view(conn, moved, start + timedelta(minutes=7)))
    assert sorted(p.name for p in old_dir.glob("snapshot-*.sqlite.age")) == sorted(
        [s.name for s in [*old, pending]]
    )
    assert all(s.name in rows for s in [*old, pending])  # still recorded, not marked deleted
    assert rows[pending.name]["verified_at"] is None
    assert {backup.location(moved, rows[s.name]) for s in [*old, pending]} == {"elsewhere"}
    # In the new dir retention counted only the new dir's: the two newest verified.
    assert sorted(p.name for p in new_dir.glob("snapshot-*.sqlite.age")) == sorted(s.name for s in new[-2:])
    newest = view.newest_verified
    assert newest is not None
    assert newest.name == new[-1].name
    assert newest.location == "here"
    assert newest.path == str(new_dir / new[-1].name)


def test_backup_view_names_the_newest_verified_snapshot_and_the_disk(config: Config) -> None:
    with Store(config.db_path) as store:
        good = backup.snapshot_job(config, store, at(0))
        backup.verify_job(config, store)
        bad = backup.snapshot_job(config, store, at(1))
        store.write_sync(lambda conn: backup.record_verification(conn, bad.name, ["broken"], at(2)))
        view = store.query(lambda conn: backup.backup_view(conn, config, at(3)))
    last, newest = view.last, view.newest_verified
    assert last is not None and newest is not None
    assert last.name == bad.name and last.verified is False
    assert newest.name == good.name
    assert newest.path == str(config.backup_path / good.name)
    assert view.last_verified_ok_at == newest.created_at
    assert view.directory_exists is True and view.other_disk is False  # tmp_path: one disk


def test_check_backup_dir_refuses_what_the_box_cannot_use(config: Config, tmp_path: Path) -> None:
    with pytest.raises(backup.BackupFailed, match="not an absolute path"):
        backup.check_backup_dir(config, "backups")
    with pytest.raises(backup.BackupFailed, match="does not exist: plug in and mount"):
        backup.check_backup_dir(config, str(tmp_path / "nowhere"))
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(backup.BackupFailed, match="not a directory"):
        backup.check_backup_dir(config, str(tmp_path / "a-file"))
    checked = backup.check_backup_dir(config, str(config.backup_path))
    assert checked.other_disk is False
    assert any("on the same disk as the database" in w for w in checked.warnings)


def test_write_setting_changes_one_key_and_keeps_the_rest(tmp_path: Path) -> None:
    import tomllib

    from appliance.core.config import write_setting

    settings = tmp_path / "venuebox.toml"
    settings.write_text(
        "# Main stage box, set up by Sam\nport = 8080  # tablets\n\n[backups]\n# on the USB disk\n"
        'backup_dir = "/old/place"  # was here\nbackup_keep_last = 5\n'
    )
    write_setting(tmp_path, "backup_dir", "/media/backup/box")
    text = settings.read_text()
    assert text == text.replace("/old/place", "/media/backup/box")  # only that value changed
    assert text.startswith("# Main stage box, set up by Sam\nport = 8080  # tablets\n")
    assert 'backup_dir = "/media/backup/box"  # was here' in text and "# on the USB disk" in text
    assert tomllib.loads(text)["backups"] == {"backup_dir": "/media/backup/box", "backup_keep_last": 5}
    assert load_config(tmp_path, environ={}).backup_dir == "/media/backup/box"
    (tmp_path / "venuebox.toml").unlink()
    write_setting(tmp_path, "backup_dir", "/media/x")  # no file yet: one with that key
    assert load_config(tmp_path, environ={}).backup_dir == "/media/x"
