"""Rotating the personal-data key on a real box: every personal field re-encrypted in one transaction,
and a crash (a real one: the process exits mid-rotation) or an error at any step leaves a database
the box reads, with nothing lost."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from appliance.core import data_key, personal
from appliance.core.config import Config
from appliance.core.storage import Store
from appliance.shared.errors import DataKeyMismatch, RotationRunning
from tests.conftest import make_box
from tests.personal_package import guardian_phone, participants_of_sample, personal_package

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_box(tmp_path / "box", package=personal_package(tmp_path / "package"))


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    with Store(config.db_path) as store:
        yield store


def _sealed(conn: sqlite3.Connection) -> dict[str, tuple[str | None, str | None]]:
    return {
        r["entry_id"]: (r["participants_enc"], r["personal_enc"])
        for r in conn.execute("SELECT entry_id, participants_enc, personal_enc FROM entries")
    }


def sealed_rows(store: Store) -> dict[str, tuple[str | None, str | None]]:
    return store.query(_sealed)


def plaintexts(store: Store, key_path: Path) -> dict[str, tuple[str | None, str]]:
    """Every entry's participants and guardian_phone, opened with the key the database names."""

    def read(conn: sqlite3.Connection, key: bytes) -> dict[str, tuple[str | None, str]]:
        opened = {}
        for entry_id, (participants, others) in _sealed(conn).items():
            row_id = f"glow-2026-toronto/{entry_id}"
            names = (
                personal.decrypt(key, "entries", "participants", row_id, participants)
                if participants
                else None
            )
            phone = json.loads(others or "{}")["guardian_phone"]
            opened[entry_id] = (names, personal.decrypt(key, "entries", "guardian_phone", row_id, phone))
        return opened

    return store.query(data_key.with_key(key_path, read))


def expected() -> dict[str, tuple[str | None, str]]:
    return {
        entry_id: ("; ".join(names) or None, guardian_phone(entry_id))
        for entry_id, names in participants_of_sample().items()
    }


def key_files(config: Config) -> list[str]:
    return sorted(p.name for p in config.data_dir.glob("personal-data.key*") if not p.name.endswith(".lock"))


def test_rotation_reencrypts_every_field_in_one_transaction_and_audits_only_key_ids(
    config: Config, store: Store
) -> None:
    before = sealed_rows(store)
    old = personal.load_key(config.data_key_path)
    assert plaintexts(store, config.data_key_path) == expected()

    done = data_key.rotate(config, store, "test")

    new = personal.load_key(config.data_key_path)
    assert new != old and key_files(config) == ["personal-data.key"]
    assert config.data_key_path.stat().st_mode & 0o777 == 0o600
    assert (done.previous_key_id, done.key_id) == (data_key.key_id(old), data_key.key_id(new))
    assert store.query(data_key.recorded_key_id) == done.key_id
    after = sealed_rows(store)
    assert done.entries == 60 and done.fields == sum(bool(p) for p, _ in before.values()) + 60
    assert all(after[e][0] != before[e][0] and after[e][1] != before[e][1] for e in before if before[e][0])
    assert plaintexts(store, config.data_key_path) == expected()
    participants, _ = after["101"]
    with pytest.raises(InvalidTag):
        personal.decrypt(old, "entries", "participants", "glow-2026-toronto/101", participants or "")
    [record] = store.query(
        lambda c: [dict(r) for r in c.execute("SELECT * FROM audit_log WHERE action = 'personal.rotate_key'")]
    )
    assert record["actor"] == "test"
    assert json.loads(record["detail"]) == {
        "key_id": done.key_id,
        "previous_key_id": done.previous_key_id,
        "entries": 60,
        "fields": done.fields,
    }
    for key in (old, new):
        assert personal.key_text(key) not in record["detail"] and key.hex() not in record["detail"]


def test_a_box_that_never_took_a_snapshot_keeps_no_old_key(config: Config, store: Store) -> None:
    assert data_key.rotate(config, store).kept_for_backups is None
    assert not config.backup_path.exists()


# A rotation in its own process, which exits (os._exit: no cleanup, no finally, no checkpoint)
# at the step named: the nearest thing to pulling the plug that a test can do.
CRASH = """
import os, sys
from pathlib import Path
from appliance.core import data_key, personal
from appliance.core.config import load_config
from appliance.core.storage import Store

config = load_config(Path(sys.argv[1]), environ={})
step = sys.argv[2]

def crash(*args, **kwargs):
    os._exit(70)

if step == "new-key-written":
    write = data_key._write_pending
    def write_then_crash(path, key):
        write(path, key)
        crash()
    data_key._write_pending = write_then_crash
elif step == "mid-transaction":
    encrypt, calls = personal.encrypt, []
    def encrypt_until_crash(*args):
        calls.append(1)
        if len(calls) > 40:
            crash()
        return encrypt(*args)
    personal.encrypt = encrypt_until_crash
elif step == "committed":
    data_key._promote = crash
data_key.rotate(config, Store(config.db_path), "test")
"""


@pytest.mark.parametrize(
    ("step", "files", "settled"),
    [
        ("new-key-written", ["personal-data.key", "personal-data.key.new"], "undone"),
        ("mid-transaction", ["personal-data.key", "personal-data.key.new"], "undone"),
        ("committed", ["personal-data.key", "personal-data.key.new"], "finished"),
    ],
)
def test_a_crash_at_any_step_leaves_a_readable_database_and_loses_nothing(
    config: Config, step: str, files: list[str], settled: str
) -> None:
    old = personal.load_key(config.data_key_path)
    with Store(config.db_path) as store:
        before = sealed_rows(store)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, str(config.data_dir), step],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == 70, crashed.stderr

    assert key_files(config) == files
    new = personal.load_key(data_key.pending_path(config.data_key_path))
    with Store(config.db_path) as store:
        recorded = store.query(data_key.recorded_key_id)
        # The database alone says which key is current: the old one until the commit, then the new.
        assert recorded == (data_key.key_id(new) if step == "committed" else None)
        if step != "committed":
            assert sealed_rows(store) == before  # the transaction never happened
        # Readable as it is, before anyone tidies up (the daemon's reads work through key_for).
        assert plaintexts(store, config.data_key_path) == expected()

        assert data_key.settle(config.data_key_path, store) == settled
        assert key_files(config) == ["personal-data.key"]
        assert personal.load_key(config.data_key_path) == (new if step == "committed" else old)
        assert plaintexts(store, config.data_key_path) == expected()

        again = data_key.rotate(config, store)  # and the next rotation goes through
        assert again.previous_key_id == data_key.key_id(new if step == "committed" else old)
        assert plaintexts(store, config.data_key_path) == expected()


def test_an_error_before_the_commit_is_undone_at_once(
    config: Config, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sealed_rows(store)
    old = personal.load_key(config.data_key_path)

    def fail(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(data_key, "_reseal", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        data_key.rotate(config, store)

    assert key_files(config) == ["personal-data.key"]
    assert personal.load_key(config.data_key_path) == old
    assert sealed_rows(store) == before
    assert store.query(lambda c: c.execute("SELECT count(*) FROM data_key").fetchone()[0]) == 0


def test_an_error_after_the_commit_keeps_the_new_key_readable_until_settled(
    config: Config, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(path: Path) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(data_key, "_promote", fail)
    with pytest.raises(OSError, match="rename failed"):
        data_key.rotate(config, store)
    monkeypatch.undo()

    new = personal.load_key(data_key.pending_path(config.data_key_path))
    assert store.query(data_key.recorded_key_id) == data_key.key_id(new)
    assert store.query(lambda conn: data_key.key_for(conn, config.data_key_path)) == new
    assert plaintexts(store, config.data_key_path) == expected()
    assert data_key.settle(config.data_key_path, store) == "finished"
    assert personal.load_key(config.data_key_path) == new


def test_a_rotation_is_refused_while_another_holds_the_lock(config: Config, store: Store) -> None:
    with data_key._rotation_lock(config.data_key_path) as held:
        assert held
        with pytest.raises(RotationRunning, match="another rotation"):
            data_key.rotate(config, store)
        # Nor does a tidy-up touch a rotation's files while it runs.
        data_key.pending_path(config.data_key_path).write_text("in progress\n")
        assert data_key.settle(config.data_key_path, store) is None
    data_key.pending_path(config.data_key_path).unlink()


def test_a_key_that_does_not_open_the_data_is_refused_in_words_and_changes_nothing(
    config: Config, store: Store
) -> None:
    before = sealed_rows(store)
    personal.create_key(config.data_key_path)  # another box's key, say

    with pytest.raises(DataKeyMismatch, match="does not open with the current personal-data key"):
        data_key.rotate(config, store)
    assert sealed_rows(store) == before and key_files(config) == ["personal-data.key"]


def test_a_rotated_database_names_its_key_and_refuses_another(config: Config, store: Store) -> None:
    data_key.rotate(config, store)
    personal.create_key(config.data_key_path)  # the key file replaced behind the box's back

    with pytest.raises(DataKeyMismatch, match="does not hold the personal-data key this database was sealed"):
        store.query(lambda conn: data_key.key_for(conn, config.data_key_path))


def test_opens_tells_which_key_sealed_a_database(config: Config, store: Store) -> None:
    old = personal.load_key(config.data_key_path)
    other = os.urandom(32)
    assert store.query(lambda c: data_key.opens(c, old)) is True  # tried on a sealed value
    assert store.query(lambda c: data_key.opens(c, other)) is False
    data_key.rotate(config, store)
    new = personal.load_key(config.data_key_path)
    assert store.query(lambda c: data_key.opens(c, new)) is True  # by the recorded key id
    assert store.query(lambda c: data_key.opens(c, old)) is False


def test_a_read_that_meets_a_rotation_half_way_is_read_again(config: Config) -> None:
    """A read whose snapshot began before a rotation committed may open old ciphertexts with the
    new key (renamed into place meanwhile): that is a mismatch, read again on a fresh snapshot."""

    class OneStaleRead:
        def __init__(self) -> None:
            self.reads = 0

        async def read(self, fn: Callable[[Any], Any]) -> Any:
            self.reads += 1
            return fn(None)

    calls: list[int] = []

    def decrypt_once_stale(conn: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise InvalidTag()
        return "names"

    store = OneStaleRead()
    path = config.data_key_path
    assert asyncio.run(data_key.read_retrying(store, path, decrypt_once_stale)) == "names"  # type: ignore[arg-type]
    assert store.reads == 2

    def always_stale(conn: object) -> str:
        raise InvalidTag()

    with pytest.raises(DataKeyMismatch, match="does not open this database's personal fields"):
        asyncio.run(data_key.read_retrying(store, path, always_stale))  # type: ignore[arg-type]
    assert store.reads == 2 + data_key.READ_ATTEMPTS
