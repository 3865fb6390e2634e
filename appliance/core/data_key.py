"""The personal-data key: which file holds the key that opens the database, and its rotation.

The key is ``personal-data.key`` in the data dir (0600, base64 of 32 random bytes; appliance/core/personal.py
seals with it). Its id is a short SHA-256 of the key, never the key. Each rotation records the new
key's id in the database (table ``data_key``), in the transaction that re-encrypts the fields, so the
database itself says which key opens it; no row means never rotated (the key file as it is).

`rotate` is crash-safe with respect to the key file:

1. the new key goes to ``personal-data.key.new`` (0600, fsynced, directory fsynced);
2. ONE transaction re-encrypts every personal field with it, records its id and an audit record;
3. the new key is renamed over the old one (directory fsynced).

Stopped before 2 commits: the old key and the old ciphertexts, ``.new`` an orphan. Stopped after:
the new ciphertexts, the new key still in ``.new``. `key_for` takes whichever file holds the key
the database names, so the box reads its data at every point, a running daemon included; `settle`
(at daemon start and around each rotation) tidies up: the matching key stays as
``personal-data.key``, the other file goes. Rotations and tidy-ups hold an exclusive lock on
``personal-data.key.lock``, so a tidy-up never removes a key a rotation is about to commit.

Backups: snapshots taken before a rotation hold ciphertexts of the old key. Each has its own keys
bundle with the key that sealed it (appliance/core/keys_bundle.py), but ``keys.age`` beside them is
rewritten with the new key at the next snapshot, and a snapshot taken by an older venuebox has only
that. So a rotation first writes ``keys-<old key id>.age`` into the backup dir (the same bundle, with
the old key) and a restore takes the keys file whose personal-data key opens the snapshot
(appliance/core/backup.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.core import audit, keys_bundle, personal
from appliance.shared.errors import DataKeyMismatch, RotationRunning
from appliance.shared.secrets_files import fsync_dir, write_secret
from appliance.shared.times import now_rfc3339

if TYPE_CHECKING:
    from appliance.core.config import Config
    from appliance.core.storage import Store

T = TypeVar("T")
PENDING_SUFFIX = ".new"
LOCK_SUFFIX = ".lock"
# A read that began before a rotation committed can meet the renamed key file: it is read again.
READ_ATTEMPTS = 3


def key_id(key: bytes) -> str:
    """A short, stable name for a key (16 hex digits of a SHA-256): safe to log, store and export."""
    return hashlib.sha256(b"venuebox personal-data key\x00" + key).hexdigest()[:16]


def pending_path(path: Path) -> Path:
    return path.with_name(path.name + PENDING_SUFFIX)


def recorded_key_id(conn: sqlite3.Connection) -> str | None:
    """The id of the key that sealed this database's personal fields; None if never rotated (or a
    database from before rotations existed)."""
    try:
        row = conn.execute("SELECT key_id FROM data_key WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # no data_key table: a snapshot older than migration m007
        return None
    return row[0] if row else None


def key_for(conn: sqlite3.Connection, path: Path) -> bytes:
    """The key that opens the personal fields of the database as ``conn`` sees it: the key file, or
    a rotation's ``.new`` file when the database names that one. Raises DataKeyMismatch when
    neither is the key the database names."""
    wanted = recorded_key_id(conn)
    if wanted is None:
        return personal.load_key(path)
    # ``.new`` first: it only ever disappears by being renamed over the key file, so looking there
    # first never misses a key that moves between the two reads.
    for candidate in (pending_path(path), path):
        try:
            key = personal.load_key(candidate)
        except FileNotFoundError:
            continue
        if key_id(key) == wanted:
            return key
    raise DataKeyMismatch(
        f"{path.name} does not hold the personal-data key this database was sealed with (key id "
        f"{wanted}): put back the data dir's own key (keys.age, or keys-{wanted}.age, beside the "
        "snapshots holds it)"
    )


def call_with_key(conn: sqlite3.Connection, path: Path, fn: Callable[[sqlite3.Connection, bytes], T]) -> T:
    """``fn(conn, key)`` with the key for ``conn``'s view of the database; a ciphertext that does not
    open with it is a DataKeyMismatch (a readable 503), not a crash."""
    key = key_for(conn, path)
    return _opening(lambda: fn(conn, key), path)


def _opening(fn: Callable[[], T], path: Path) -> T:
    try:
        return fn()
    except InvalidTag:
        raise DataKeyMismatch(
            f"the personal-data key in {path.parent.name}/{path.name} does not open this database's "
            "personal fields (a key from another box?)"
        ) from None


def with_key(path: Path, fn: Callable[[sqlite3.Connection, bytes], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn(conn, key)`` as a store function (``store.write(with_key(path, fn))``)."""
    return lambda conn: call_with_key(conn, path, fn)


async def read_retrying(store: Store, path: Path, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``store.read(fn)`` for a read that decrypts with the key at ``path`` (``key_for``). A read
    whose snapshot predates a rotation's commit may find the new key already renamed into place:
    it is simply read again, on a fresh snapshot."""
    attempt = 1
    while True:
        try:
            return await store.read(lambda conn: _opening(lambda: fn(conn), path))
        except DataKeyMismatch:
            if attempt >= READ_ATTEMPTS:
                raise
            attempt += 1


async def read_with_key(store: Store, path: Path, fn: Callable[[sqlite3.Connection, bytes], T]) -> T:
    """``read_retrying`` of ``fn(conn, key)``, the key chosen for that read's snapshot."""
    return await read_retrying(store, path, with_key(path, fn))


def opens(conn: sqlite3.Connection, key: bytes) -> bool | None:
    """Whether ``key`` opens this database's personal fields (by the recorded key id, else tried on
    one sealed value); None when nothing is sealed and nothing is recorded."""
    wanted = recorded_key_id(conn)
    if wanted is not None:
        return key_id(key) == wanted
    columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
    sealed = [c for c in ("participants_enc", "personal_enc") if c in columns]
    if not sealed:
        return None
    where = " OR ".join(f"{c} IS NOT NULL" for c in sealed)
    row = conn.execute(
        f"SELECT event_id, entry_id, {', '.join(sealed)} FROM entries WHERE {where} LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    row_id = f"{row[0]}/{row[1]}"
    values = dict(zip(sealed, row[2:], strict=True))
    if values.get("participants_enc"):
        column, token = "participants", values["participants_enc"]
    else:
        column, token = next(iter(json.loads(values["personal_enc"]).items()))
    try:
        personal.decrypt(key, "entries", column, row_id, token)
    except (InvalidTag, ValueError):
        return False
    return True


# -- settling a rotation that stopped half-way -------------------------------------------------------


@contextlib.contextmanager
def _rotation_lock(path: Path) -> Iterator[bool]:
    """Try to take the rotation lock (never waits); yields whether it is held. The lock file is empty,
    0600 like every file in the data dir, and owned by the data dir's owner even when a `sudo`
    rotation made it, so the service's user can always take it."""
    fd = os.open(path.with_name(path.name + LOCK_SUFFIX), os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        owner = path.parent.stat()
        if os.geteuid() == 0 and os.fstat(fd).st_uid != owner.st_uid:
            os.fchown(fd, owner.st_uid, owner.st_gid)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _promote(path: Path) -> None:
    """Step 3: the new key replaces the old one, durably."""
    # A rename, not a write (atomic_write's job): step 1 wrote the pending file whole and durably, and
    # it must stay whole until this rename, which a power cut leaves done or not done.
    os.replace(pending_path(path), path)
    fsync_dir(path.parent)


def _discard(path: Path) -> None:
    pending_path(path).unlink()
    fsync_dir(path.parent)


def _settle_locked(path: Path, store: Store) -> str | None:
    pending = pending_path(path)
    if not pending.exists():
        return None
    # A fresh read (never a caller's older snapshot): the database alone decides which key is current.
    wanted = store.query(recorded_key_id)
    if wanted is not None and key_id(personal.load_key(pending)) == wanted:
        _promote(path)
        return "finished"
    if wanted is None or (path.exists() and key_id(personal.load_key(path)) == wanted):
        _discard(path)
        return "undone"
    raise DataKeyMismatch(
        f"neither {path.name} nor {pending.name} holds the personal-data key the database names (key "
        f"id {wanted}): restore the key from keys.age or keys-{wanted}.age beside the snapshots"
    )


def settle(path: Path, store: Store) -> str | None:
    """Finish ("finished") or undo ("undone") a rotation that stopped half-way, as the database's
    recorded key id says; None when there is nothing to do or a rotation is running right now."""
    if not pending_path(path).exists():
        return None
    with _rotation_lock(path) as held:
        return _settle_locked(path, store) if held else None


# -- rotation --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    key_id: str
    previous_key_id: str
    entries: int  # entries whose fields were re-encrypted
    fields: int  # values re-encrypted (a participants list counts once)
    kept_for_backups: Path | None  # keys-<previous id>.age, for the snapshots taken before


def _write_pending(path: Path, key: bytes) -> None:
    """Step 1: the new key, durably, beside the old one, owned like the old one (a tech runs the
    rotation with sudo; the daemon's user must read the new key from the moment it commits)."""
    pending = pending_path(path)
    write_secret(pending, personal.key_text(key))
    owner = path.stat()
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        os.chown(pending, owner.st_uid, owner.st_gid)
    fsync_dir(path.parent)


def _reseal(conn: sqlite3.Connection, old: bytes, new: bytes, actor: str, request_id: str | None) -> Rotation:
    """Step 2, inside the writer's transaction: every personal field re-encrypted, the new key's id
    recorded, and the audit record. Any failure rolls all of it back."""
    recorded = recorded_key_id(conn)
    if recorded is not None and recorded != key_id(old):
        raise DataKeyMismatch(
            f"the database's key changed during the rotation (now {recorded}): run the rotation again"
        )
    rows = conn.execute(
        "SELECT event_id, entry_id, participants_enc, personal_enc FROM entries"
        " WHERE participants_enc IS NOT NULL OR personal_enc IS NOT NULL"
    ).fetchall()
    fields = 0

    def again(column: str, row_id: str, token: str) -> str:
        nonlocal fields
        try:
            plain = personal.decrypt(old, "entries", column, row_id, token)
        except (InvalidTag, ValueError):
            raise DataKeyMismatch(
                f"entry {row_id}'s {column} does not open with the current personal-data key "
                f"({key_id(old)}): nothing was changed. Is personal-data.key this box's own?"
            ) from None
        fields += 1
        return personal.encrypt(new, "entries", column, row_id, plain)

    for event_id, entry_id, participants, others in rows:
        row_id = f"{event_id}/{entry_id}"
        sealed = json.loads(others) if others else None
        conn.execute(
            "UPDATE entries SET participants_enc = ?, personal_enc = ? WHERE event_id = ? AND entry_id = ?",
            (
                again("participants", row_id, participants) if participants else participants,
                json.dumps({c: again(c, row_id, t) for c, t in sealed.items()}, sort_keys=True)
                if sealed
                else others,
                event_id,
                entry_id,
            ),
        )
    # A walk-on typed into the schedule draft (appliance/core/schedule.py) holds its participants
    # sealed as its entry row will hold them: re-sealed too, so the publish stores what opens.
    for seq, event_id, change, token in conn.execute(
        "SELECT seq, event_id, change, sealed FROM schedule_draft WHERE sealed IS NOT NULL"
    ).fetchall():
        row_id = f"{event_id}/{json.loads(change)['entry_id']}"
        conn.execute(
            "UPDATE schedule_draft SET sealed = ? WHERE seq = ?", (again("participants", row_id, token), seq)
        )
    new_id = key_id(new)
    conn.execute(
        "INSERT INTO data_key (id, key_id, rotated_at) VALUES (1, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET key_id = excluded.key_id, rotated_at = excluded.rotated_at",
        (new_id, now_rfc3339()),
    )
    detail: dict[str, Any] = {
        "key_id": new_id,
        "previous_key_id": key_id(old),
        "entries": len(rows),
        "fields": fields,
    }
    audit.record(conn, actor, "personal.rotate_key", detail, request_id)
    return Rotation(new_id, key_id(old), len(rows), fields, None)


def _keep_for_backups(config: Config, old: bytes) -> Path | None:
    """``keys-<old id>.age`` beside the snapshots: the key bundle the ones taken so far need."""
    if not config.backup_path.exists():
        return None
    name = f"keys-{key_id(old)}.age"
    keys_bundle.write_key_files(config, config.backup_path, personal_data_key=old, name=name)
    return config.backup_path / name


def rotate(config: Config, store: Store, actor: str = "cli", request_id: str | None = None) -> Rotation:
    """A new personal-data key: every personal field re-encrypted with it in one transaction, the
    key file replaced crash-safely (module docstring), one ``personal.rotate_key`` audit record (key
    ids only). Refused while another rotation runs. Blocking."""
    path = config.data_key_path
    with _rotation_lock(path) as held:
        if not held:
            raise RotationRunning(
                "another rotation of the personal-data key is running: wait for it to finish"
            )
        _settle_locked(path, store)
        old = store.query(lambda conn: key_for(conn, path))
        kept = _keep_for_backups(config, old)
        new = AESGCM.generate_key(bit_length=256)
        _write_pending(path, new)
        try:
            # No timeout: the answer must be the transaction's real outcome, never "still running".
            done = store.write_sync(lambda conn: _reseal(conn, old, new, actor, request_id), timeout=None)
        finally:
            # Committed or not, the database now decides: promote the new key, or drop it.
            _settle_locked(path, store)
    return Rotation(done.key_id, done.previous_key_id, done.entries, done.fields, kept)
