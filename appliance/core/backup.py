"""Encrypted local snapshots: take, verify, keep, open.

* **Take** (`take_snapshot`, every ``backup_interval_s`` in the daemon): SQLite's online backup API
  copies the live database to a consistent file while tablets keep writing; its row counts and
  chain heads are read from that copy; the copy is encrypted with age (pyrage) to the box's own
  backup identity and the organisers' recipients, fsynced, renamed into place, its SHA-256
  recorded; the plaintext copy is deleted. Beside each snapshot, ``snapshot-<time>.keys.age`` holds
  the keys bundle written with it (appliance/core/keys_bundle.py: the box's keys, its TLS certificate,
  admin and uplink tokens, its settings) for the same recipients, so a box restored on new hardware
  is the same box, with the identity in force when the snapshot was taken; ``keys.age`` is the
  newest bundle. With a passphrase, ``backup-identity.age`` wraps the identity so the passphrase
  alone opens everything. A key rotation (appliance/core/data_key.py) leaves ``keys-<old key id>.age``
  for the snapshots taken before per-snapshot bundles existed, and a restore takes the keys file
  that opens the snapshot.
* **Verify** (`verify_snapshot`, a job of its own): decrypt to a temporary file, ``PRAGMA
  integrity_check``, and compare the row counts and ledger head with what was recorded.
* **Keep** (`retained`): of the snapshots that verified, the newest ``backup_keep_last`` plus the
  newest of each hour for ``backup_keep_hourly_h`` hours, and always the newest one; every snapshot
  not verified yet; the newest one that failed. The rest are deleted. Only snapshots found by name
  in the current backup dir count: after ``backup_dir`` changes, the old dir's stay where they are.
* **Open** (`unpack`): decrypt a snapshot into a new, empty data dir, check it, and put the box's
  identity back from the snapshot's keys bundle (one of another box, or written with another
  database, is refused). A restore (`venuebox restore`) and a recovery (`venuebox recover`) start
  with it: appliance/core/recovery.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyrage
from pyrage import passphrase as age_passphrase
from pyrage import x25519

from appliance.core import alerts, audit, data_key, keys, keys_bundle
from appliance.core.chain import chain_problems, head, verify_chains
from appliance.core.config import Config
from appliance.core.devices import devices_signature
from appliance.core.storage import Store
from appliance.shared.errors import DatabaseDamaged, DataKeyMismatch, DomainError
from appliance.shared.secrets_files import atomic_write_from, write_secret
from appliance.shared.status import BackupView, LastSnapshot, SnapshotLocation, VerifiedSnapshot
from appliance.shared.times import parse_rfc3339, to_rfc3339, utcnow
from appliance.storage.db import connect

SNAPSHOT_PREFIX = "snapshot-"
SNAPSHOT_SUFFIX = ".sqlite.age"
# What a verification compares besides the chain heads: the tables whose rows matter after a loss.
COUNTED_TABLES = ("sheets", "audit_log", "outbox", "devices", "entries", "judges", "sessions", "criteria")
CHUNK = 1024 * 1024


class BackupFailed(DomainError):
    """A snapshot, verification or restore could not be done; the message says why and what to do."""


class BackupDirMissing(BackupFailed):
    """The configured backup dir is not there (its disk unplugged or not mounted)."""


class NotOpened(BackupFailed):
    """A snapshot the key given does not decrypt."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a live database through SQLite's online backup API (writers are not
    blocked: the copy reads one snapshot of the WAL database)."""
    src = connect(source, readonly=True)
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
    finally:
        dst.close()
        src.close()


def database_facts(path: Path) -> dict[str, Any]:
    """Row counts and chain heads of a database file, read without changing it."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in COUNTED_TABLES
        }
        ledger_rows, ledger_head = head(conn, "sheets")
        audit_rows, audit_head = head(conn, "audit_log")
    finally:
        conn.close()
    return {
        "row_counts": counts,
        "ledger_rows": ledger_rows,
        "ledger_head": ledger_head,
        "audit_rows": audit_rows,
        "audit_head": audit_head,
    }


def encrypt_to(recipients: list[x25519.Recipient], source: Path, target: Path) -> None:
    """age-encrypt ``source`` to ``target`` (through a temporary name, fsynced, then renamed)."""
    atomic_write_from(target, lambda tmp: pyrage.encrypt_file(str(source), str(tmp), recipients), 0o600)


# -- taking a snapshot ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    name: str
    path: Path
    created_at: str
    bytes: int
    sha256: str
    facts: dict[str, Any]
    recipients: int


def prepare_backup_dir(config: Config) -> Path:
    """The backup dir, ready to write into (absolute, so that what is recorded names it whatever
    the working directory). The default one (<data dir>/backups) is made when missing; a configured
    one (`venuebox backup configure --dir`, a second disk) must exist: when it does not, its disk is
    unplugged or not mounted, and making it would put the snapshots back on the database's disk (an
    empty mount point) or fail anyway."""
    directory = config.backup_path.absolute()
    if config.backup_dir:
        if not directory.is_dir():
            raise BackupDirMissing(backup_dir_missing(directory))
    else:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    return directory


def backup_dir_missing(directory: Path) -> str:
    return (
        f"the backup directory {directory} is missing: plug its disk back in and mount it, or choose "
        "another one with `venuebox backup configure --dir PATH`"
    )


def on_other_disk(config: Config) -> bool | None:
    """Whether the backup dir is on another file system than the database (None: a configured
    backup dir is missing; the default one, not made yet, is in the data dir). On the same one, a
    dead SD card or disk takes the snapshots with the database."""
    try:
        backup_dev = config.backup_path.stat().st_dev
    except FileNotFoundError:
        return False if not config.backup_dir else None
    return backup_dev != config.db_path.parent.stat().st_dev


# Where systemd/venuebox.service lets the service write besides its data dir (ReadWritePaths=),
# once installed where docs/operations.md puts it.
SERVICE_WRITABLE = (Path("/media"), Path("/run/media"), Path("/mnt"))
SERVICE_UNIT = Path("/etc/systemd/system/venuebox.service")


@dataclass(frozen=True)
class BackupDirCheck:
    directory: Path
    other_disk: bool
    warnings: list[str]


def check_backup_dir(config: Config, given: str) -> BackupDirCheck:
    """`venuebox backup configure --dir`: ``given`` must be an absolute path to an existing
    directory the box can write in (raises BackupFailed, saying why, otherwise). Warnings: on the
    database's file system (the point of a second disk is lost), the disk's mount point itself
    (unplugged, an empty folder on the database's disk takes its place: a folder on the disk goes
    missing instead, which the ``backup-snapshot`` alert reports), or outside what the systemd unit
    lets the service write."""
    directory = Path(given)
    if not directory.is_absolute():
        raise BackupFailed(f"{given} is not an absolute path: give the whole path, e.g. /media/backup/box")
    if not directory.exists():
        raise BackupFailed(
            f"{directory} does not exist: plug in and mount the backup disk, make the folder on it, then "
            "configure again"
        )
    if not directory.is_dir():
        raise BackupFailed(f"{directory} is not a directory")
    try:
        probe, name = tempfile.mkstemp(dir=directory, prefix=".venuebox-probe-")
        os.close(probe)
        os.unlink(name)
    except OSError as exc:
        raise BackupFailed(f"{directory} is not writable ({exc.strerror})") from None
    owner = config.data_dir.stat()
    if os.geteuid() == 0 and owner.st_uid != 0 and not _writable_for(directory, owner.st_uid, owner.st_gid):
        raise BackupFailed(
            f"{directory} is not writable for the box's service (the data dir's owner, uid {owner.st_uid}): "
            "`chown` the folder to it, or mount a FAT or exFAT disk with -o umask=000"
        )
    warnings = []
    other_disk = directory.stat().st_dev != config.db_path.parent.stat().st_dev
    if not other_disk:
        warnings.append(
            f"{directory} is on the same disk as the database ({config.data_dir}): a dead SD card or "
            "disk takes the snapshots with it; choose a folder on another disk"
        )
    if other_disk and os.path.ismount(directory):
        warnings.append(
            f"{directory} is a mount point: when its disk is unplugged it stays behind as an empty folder on "
            "the database's disk, and snapshots would go there; use a folder on the disk instead (`mkdir "
            f"{directory / 'venuebox-backups'}`, then `venuebox backup configure --dir` it)"
        )
    resolved = directory.resolve()
    allowed = (*SERVICE_WRITABLE, config.data_dir.resolve())
    if SERVICE_UNIT.exists() and not any(resolved == root or root in resolved.parents for root in allowed):
        warnings.append(
            f"under systemd the service writes only in its data dir, /media, /run/media and /mnt: add "
            f"ReadWritePaths={directory} in a drop-in (`sudo systemctl edit venuebox`), else every "
            "snapshot fails"
        )
    return BackupDirCheck(directory, other_disk, warnings)


def _writable_for(directory: Path, uid: int, gid: int) -> bool:
    """Whether the mode bits let ``uid`` (group ``gid``) make files in ``directory``."""
    st = directory.stat()
    if st.st_uid == uid:
        need = stat.S_IWUSR | stat.S_IXUSR
    elif st.st_gid == gid:
        need = stat.S_IWGRP | stat.S_IXGRP
    else:
        need = stat.S_IWOTH | stat.S_IXOTH
    return st.st_mode & need == need


def snapshot_name(at: datetime) -> str:
    return f"{SNAPSHOT_PREFIX}{at.strftime('%Y%m%dT%H%M%S')}{at.microsecond // 1000:03d}Z{SNAPSHOT_SUFFIX}"


def take_snapshot(config: Config, now: datetime | None = None) -> Snapshot:
    """Copy, encrypt and fsync one snapshot into the backup dir (blocking: run it off the event
    loop). The caller records it (`record_snapshot`) in the writer's transaction."""
    now = now or utcnow()
    directory = prepare_backup_dir(config)
    recipients = keys.recipients(config)
    name = snapshot_name(now)
    target = directory / name
    bundle = directory / keys_bundle.bundle_name(name)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".snapshot-") as scratch:
        files = keys_bundle.read_box_files(config)  # before the copy: see read_box_files
        plain = Path(scratch) / "venuebox.sqlite"
        copy_database(config.db_path, plain)
        facts = database_facts(plain)
        opening_key = sealing_key(config, plain)
        # The snapshot's keys bundle first: a snapshot on disk always has its own beside it.
        keys_bundle.write_key_files(
            config,
            directory,
            opening_key,
            bundle.name,
            database=plain,
            files=files,
            copies=(keys_bundle.KEYS_FILE,),
        )
        try:
            encrypt_to(recipients, plain, target)
        except BaseException:
            bundle.unlink(missing_ok=True)
            raise
    return Snapshot(
        name=name,
        path=target,
        created_at=to_rfc3339(now),
        bytes=target.stat().st_size,
        sha256=sha256_file(target),
        facts=facts,
        recipients=len(recipients) - 1,
    )


def sealing_key(config: Config, database: Path) -> bytes | None:
    """The personal-data key that opens this copy of the database (during a key rotation, the file
    and the database may briefly disagree); None: the key file's, whatever it is (the scores are
    backed up even when the personal data cannot be)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        try:
            return data_key.key_for(conn, config.data_key_path)
        except DataKeyMismatch:
            return None


def record_snapshot(conn: sqlite3.Connection, snapshot: Snapshot) -> None:
    f = snapshot.facts
    conn.execute(
        "INSERT INTO snapshots (name, path, created_at, bytes, sha256, ledger_rows, ledger_head, audit_rows,"
        " audit_head, row_counts, recipients) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            snapshot.name,
            str(snapshot.path),
            snapshot.created_at,
            snapshot.bytes,
            snapshot.sha256,
            f["ledger_rows"],
            f["ledger_head"],
            f["audit_rows"],
            f["audit_head"],
            json.dumps(f["row_counts"], sort_keys=True),
            snapshot.recipients,
        ),
    )


# -- verifying ------------------------------------------------------------------------------------


def decrypt_to(path: Path, target: Path, identities: list[x25519.Identity]) -> None:
    try:
        pyrage.decrypt_file(str(path), str(target), identities)
    except pyrage.DecryptError as exc:
        raise NotOpened(f"{path.name} could not be decrypted with the key given ({exc})") from None
    except OSError as exc:  # age's stream cut short or altered: pyrage says "decryption error"
        if not path.is_file() or not os.access(path, os.R_OK):
            raise
        raise BackupFailed(
            f"{path.name} is damaged or cut short: it does not decrypt to the end ({exc})"
        ) from None


def check_database(path: Path) -> list[str]:
    """``PRAGMA integrity_check`` and both hash chains of a database file: [] when sound."""
    conn = connect(path, readonly=True)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        problems = [] if problems == ["ok"] else problems
        return problems + chain_problems(verify_chains(conn))
    except sqlite3.DatabaseError as exc:
        return [f"not a readable database: {exc}"]
    finally:
        conn.close()


def verify_snapshot(config: Config, row: dict[str, Any]) -> list[str]:
    """Decrypt the snapshot ``row`` names to a temporary file and check it against what was
    recorded when it was taken; [] when it holds. Blocking."""
    path = config.backup_path / row["name"]
    if not path.exists():
        return [f"{path.name} is missing from {path.parent}"]
    if sha256_file(path) != row["sha256"]:
        return [f"{path.name} has changed since it was written (SHA-256 differs)"]
    with tempfile.TemporaryDirectory(prefix="venuebox-verify-") as scratch:
        plain = Path(scratch) / "venuebox.sqlite"
        try:
            decrypt_to(path, plain, [keys.box_identity(config)])
        except BackupFailed as exc:
            return [exc.detail]
        problems = check_database(plain)
        if problems:
            return problems
        facts = database_facts(plain)
    recorded = json.loads(row["row_counts"])
    for table, rows in recorded.items():
        if facts["row_counts"].get(table) != rows:
            problems.append(f"{table}: {facts['row_counts'].get(table)} rows, {rows} recorded")
    if facts["ledger_head"] != row["ledger_head"]:
        problems.append("the ledger head hash differs from the one recorded")
    return problems


def record_verification(conn: sqlite3.Connection, name: str, problems: list[str], now: datetime) -> None:
    conn.execute(
        "UPDATE snapshots SET verified_at = ?, verify_ok = ?, verify_problem = ? WHERE name = ?",
        (to_rfc3339(now), int(not problems), "; ".join(problems)[:1000] or None, name),
    )


def unverified(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM snapshots WHERE verified_at IS NULL AND deleted_at IS NULL ORDER BY created_at"
    )
    return [dict(row) for row in rows]


# -- retention ------------------------------------------------------------------------------------


Verified = bool | None  # a snapshot's check: True verified, False does not verify, None not checked yet


def retained(
    snapshots: Iterable[tuple[str, datetime, Verified]], now: datetime, keep_last: int, hourly_h: int
) -> set[str]:
    """The names to keep of (name, created_at, verified).

    * Snapshots that **verified** are the ones that restore: the ``keep_last`` newest of them, plus
      the newest of each clock hour (UTC) that began less than ``hourly_h`` hours ago, and always
      the newest one, whatever the settings. Clock hours, not hours counted back from ``now``: the
      snapshot that represents an hour stays the same at every later pass, so an hour once covered
      stays covered for the whole period.
    * Snapshots **not verified yet** (taken since the last verification pass) are all kept, and
      count for nothing until their check is in: a run of them can push nothing out, and none is
      deleted before anyone knows whether it restores.
    * Snapshots that **do not verify** restore nothing and count for nothing: a database damaged
      after a good snapshot makes every later one fail, and counting those would push out the good
      one, the only one that could bring the box back. The newest failed one alone is kept, for
      diagnosis: its verify problem is recorded either way, but the file itself shows what was
      wrong (a changed file, or the damaged database as it was, which `sqlite3 .recover` can still
      read sheets from that no verified snapshot holds). Older failed ones are deleted: keeping one
      bounds the room failures take on the backup disk.
    """
    items = sorted(snapshots, key=lambda item: item[1], reverse=True)
    good = [(name, at) for name, at, verified in items if verified is True]
    keep = {name for name, _, verified in items if verified is None}
    failed = [name for name, _, verified in items if verified is False]
    if failed:
        keep.add(failed[0])
    if good:
        keep.add(good[0][0])
    keep.update(name for name, _ in good[:keep_last])
    oldest_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
        hours=hourly_h - 1
    )
    seen_hours: set[datetime] = set()
    for name, at in good:
        hour = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if hourly_h > 0 and hour >= oldest_hour and hour not in seen_hours:
            seen_hours.add(hour)
            keep.add(name)
    return keep


def verified_state(row: Mapping[str, Any]) -> Verified:
    return None if row["verified_at"] is None else bool(row["verify_ok"])


def location(config: Config, row: Mapping[str, Any]) -> SnapshotLocation:
    """Where a recorded snapshot is, as the box sees it: ``here`` (its file is in the backup dir,
    found by name), ``missing`` (written to this backup dir, the file is not there), or
    ``elsewhere`` (written to another backup dir, before ``backup_dir`` changed, and not here).
    The box checks and deletes only what is here: what it wrote elsewhere stays as it is."""
    if (config.backup_path / row["name"]).exists():
        return "here"
    written_to = os.path.realpath(Path(row["path"]).parent)
    return "missing" if written_to == os.path.realpath(config.backup_path) else "elsewhere"


def apply_retention(config: Config, store: Store, now: datetime | None = None) -> list[str]:
    """Delete the snapshots retention does not keep (rows marked, then files); returns names.
    Only snapshots whose file is in the backup dir count and are deleted: one written to another
    backup dir (before ``backup_dir`` changed) or whose file is gone is left as it is."""
    now = now or utcnow()
    rows = store.query(
        lambda conn: [
            dict(r)
            for r in conn.execute(
                "SELECT name, path, created_at, verified_at, verify_ok FROM snapshots"
                " WHERE deleted_at IS NULL"
            )
        ]
    )
    rows = [r for r in rows if location(config, r) == "here"]
    keep = retained(
        ((r["name"], parse_rfc3339(r["created_at"]), verified_state(r)) for r in rows),
        now,
        config.backup_keep_last,
        config.backup_keep_hourly_h,
    )
    dropped = [r for r in rows if r["name"] not in keep]
    if dropped:
        at = to_rfc3339(now)
        store.write_sync(
            lambda conn: conn.executemany(
                "UPDATE snapshots SET deleted_at = ? WHERE name = ?", [(at, r["name"]) for r in dropped]
            )
        )
    # Files go only once the database no longer lists them: a power cut in between leaves a file
    # nobody lists (deleted here next time), never a listed snapshot whose file is gone.
    gone = store.query(
        lambda conn: [r[0] for r in conn.execute("SELECT name FROM snapshots WHERE deleted_at IS NOT NULL")]
    )
    for name in gone:
        # Named in the backup dir, never by a stored path: a restored copy of the database on the
        # same machine must not reach the original box's files.
        (config.backup_path / name).unlink(missing_ok=True)
        if companion := keys_bundle.bundle_name(name):  # its keys bundle goes with it
            (config.backup_path / companion).unlink(missing_ok=True)
    return [r["name"] for r in dropped]


# -- the jobs -------------------------------------------------------------------------------------

SNAPSHOT_FINGERPRINT = "backup-snapshot"
VERIFY_FINGERPRINT = "backup-verify"


def snapshot_job(config: Config, store: Store, now: datetime | None = None) -> Snapshot:
    """One snapshot taken, recorded (audited) and retention applied; a failure raises the
    ``backup-snapshot`` alert (critical) and BackupFailed, a success clears it. Blocking."""
    # The live file first: a damaged database raises DatabaseDamaged naming it, never "snapshot
    # failed". A snapshot of it would not restore, and retention would delete a good older snapshot
    # to make room for it: the recovery (docs/operations.md, "The SD card died / the database is
    # damaged") needs those.
    store.ensure_sound()
    try:
        snapshot = take_snapshot(config, now)
    except (OSError, sqlite3.Error, pyrage.EncryptError, DomainError) as exc:
        why = getattr(exc, "detail", None) or str(exc)
        if isinstance(exc, BackupDirMissing):
            message = (
                f"The box could not write its encrypted snapshot to {config.backup_path}: the directory is "
                "missing (its disk unplugged or not mounted?). Scores are still stored. Plug the backup "
                "disk back in and mount it there (`venuebox backup now` then takes one at once), or choose "
                "another folder with `venuebox backup configure --dir PATH`; meanwhile make a USB export "
                "(`venuebox export`)."
            )
        else:
            message = (
                f"The box could not write its encrypted snapshot to {config.backup_path} ({why}). Scores "
                "are still stored; make a USB export (`venuebox export`) and free space or fix the backup "
                "directory."
            )
        store.write_sync(
            lambda conn: alerts.raise_alert(
                conn, SNAPSHOT_FINGERPRINT, "critical", "Backup snapshot failed", message
            )
        )
        failed = BackupDirMissing if isinstance(exc, BackupDirMissing) else BackupFailed
        raise failed(f"snapshot failed: {why}") from None

    def record(conn: sqlite3.Connection) -> None:
        record_snapshot(conn, snapshot)
        audit.record(conn, "backup", "backup.snapshot", {"name": snapshot.name, "sha256": snapshot.sha256})
        alerts.clear_alert(conn, SNAPSHOT_FINGERPRINT)

    store.write_sync(record)
    apply_retention(config, store, now)
    return snapshot


def verify_job(config: Config, store: Store, now: datetime | None = None) -> list[tuple[str, list[str]]]:
    """Verify every snapshot not verified yet; a snapshot that fails raises the ``backup-verify``
    alert (critical), a good newest one clears it. Returns (name, problems) for each. Blocking.
    A snapshot written to another backup dir (before ``backup_dir`` changed) is not checked; while
    the backup dir itself is missing, none is judged (each says so, nothing is recorded)."""
    results = []
    for row in store.query(unverified):
        where = location(config, row)
        if where == "elsewhere":
            continue  # written to the backup dir used before this one: not this dir's to judge
        if where == "missing" and not config.backup_path.is_dir():
            # The whole dir is gone (a disk unplugged): say so, but record no verdict; the snapshot
            # is checked when the disk is back.
            results.append((row["name"], [backup_dir_missing(config.backup_path.absolute())]))
            continue
        problems = verify_snapshot(config, row)
        at = now or utcnow()

        def record(
            conn: sqlite3.Connection,
            row: dict[str, Any] = row,
            problems: list[str] = problems,
            at: datetime = at,
        ) -> None:
            record_verification(conn, row["name"], problems, at)
            if problems:
                alerts.raise_alert(
                    conn,
                    VERIFY_FINGERPRINT,
                    "critical",
                    "A backup snapshot does not verify",
                    f"{row['name']}: {'; '.join(problems)[:400]}. Make a USB export now (`venuebox export`); "
                    "check the backup disk.",
                    at,
                )
            else:
                alerts.clear_alert(conn, VERIFY_FINGERPRINT, at)

        store.write_sync(record)
        results.append((row["name"], problems))
    return results


DEVICES_WATCH_S = 2.0


def add_backup_jobs(scheduler: Any, config: Config, store: Store) -> None:
    """The snapshot and verification jobs on the daemon's scheduler, each run in a worker thread
    (they copy, encrypt and decrypt files) so the event loop keeps serving tablets."""
    # Imported here for start-up time: the scheduler (apscheduler) is the daemon's, and the CLI's
    # backup commands import this module.
    from appliance.core.watchdog import add_interval_job

    log = logging.getLogger("venuebox.backup")

    async def snapshot() -> None:
        try:
            taken = await asyncio.to_thread(snapshot_job, config, store)
        except (BackupFailed, DatabaseDamaged) as exc:
            log.error("backup: %s", exc.detail)
            return
        log.info("backup: snapshot %s (%d bytes)", taken.name, taken.bytes)
        # Verified at once, not at the next verify pass: the ledger's safe watermark (which lets
        # tablets forget the sheets it covers, appliance/core/watermark.py) moves only with a verified one.
        await verify()

    verifying = asyncio.Lock()  # the pass after a snapshot and the periodic one never overlap

    async def verify() -> None:
        if store.damaged is not None:
            return  # its result could not be recorded; the snapshots wait for the restored box
        async with verifying:
            for name, problems in await asyncio.to_thread(verify_job, config, store):
                if problems:
                    log.error("backup: %s does not verify: %s", name, "; ".join(problems))

    seen: list[str] = []

    async def devices_watch() -> None:
        """A tablet paired, revoked or rotated its token: snapshot now (PROTOCOL.md: a box rebuilt
        from its backups must know every tablet, and accept its current token)."""
        if store.damaged is not None:
            return
        signature = await store.read(devices_signature)
        if seen and seen[-1] != signature:
            scheduler.modify_job("backup-snapshot", next_run_time=datetime.now(UTC))
        seen[:] = [signature]

    soon = utcnow()
    for func, job_id, interval, first in (
        (devices_watch, "devices", DEVICES_WATCH_S, soon),
        (
            snapshot,
            "snapshot",
            config.backup_interval_s,
            soon + timedelta(seconds=min(60.0, config.backup_interval_s)),
        ),
        (
            verify,
            "verify",
            config.backup_verify_interval_s,
            soon + timedelta(seconds=config.backup_verify_interval_s),
        ),
    ):
        add_interval_job(scheduler, func, f"backup-{job_id}", f"backup {job_id}", interval, first)


# -- status ---------------------------------------------------------------------------------------


def backup_view(conn: sqlite3.Connection, config: Config, now: datetime) -> BackupView:
    """What the console and `venuebox backup status` show: the last snapshot and its verification,
    the newest verified one (the one to restore from), how many are kept, who can decrypt them,
    and whether the backup dir is there and on another disk than the database."""
    last = conn.execute(
        "SELECT * FROM snapshots WHERE deleted_at IS NULL ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    last_good = conn.execute(
        "SELECT * FROM snapshots WHERE verify_ok = 1 AND deleted_at IS NULL ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    kept = conn.execute(
        "SELECT count(*), coalesce(sum(bytes), 0) FROM snapshots WHERE deleted_at IS NULL"
    ).fetchone()
    organisers = keys.organiser_recipients(config)
    # The snapshot to restore from: the newest that verified (retention never deletes it).
    newest_verified = None
    if last_good is not None:
        where = location(config, last_good)
        newest_verified = VerifiedSnapshot(
            name=last_good["name"],
            path=str((config.backup_path / last_good["name"]).absolute())
            if where == "here"
            else last_good["path"],
            created_at=last_good["created_at"],
            age_s=round((now - parse_rfc3339(last_good["created_at"])).total_seconds(), 1),
            bytes=last_good["bytes"],
            ledger_rows=last_good["ledger_rows"],
            location=where,
        )
    last_view = None
    if last is not None:
        last_view = LastSnapshot(
            name=last["name"],
            created_at=last["created_at"],
            age_s=round((now - parse_rfc3339(last["created_at"])).total_seconds(), 1),
            bytes=last["bytes"],
            sha256=last["sha256"],
            ledger_rows=last["ledger_rows"],
            verified=None if last["verified_at"] is None else bool(last["verify_ok"]),
            verify_problem=last["verify_problem"],
        )
    return BackupView(
        configured=bool(organisers) or (config.data_dir / keys.PASSPHRASE).exists(),
        directory=str(config.backup_path),
        interval_s=config.backup_interval_s,
        recipients=len(organisers),
        passphrase=(config.data_dir / keys.PASSPHRASE).exists(),
        kept=kept[0],
        kept_bytes=kept[1],
        last=last_view,
        last_verified_ok_at=last_good["created_at"] if last_good else None,
        newest_verified=newest_verified,
        directory_exists=config.backup_path.is_dir(),
        # False: on the database's disk, lost with it; None: the directory is missing.
        other_disk=on_other_disk(config),
    )


def list_snapshots(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM snapshots WHERE deleted_at IS NULL ORDER BY created_at DESC")
    return [dict(r) for r in rows]


# -- opening a snapshot ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    data_dir: Path
    ledger_rows: int
    ledger_head: str
    keys_restored: bool
    # Where the personal-data key came from: the snapshot's own snapshot-<time>.keys.age, keys.age,
    # or the keys-<key id>.age a key rotation kept.
    keys_file: str | None = None
    # Whether the restored personal-data key opens the snapshot's personal fields (None: none sealed).
    personal_data_opens: bool | None = None
    box_id: str = ""
    # What the keys bundle put back besides the keys (certificate, tokens, settings), and from which file.
    identity: keys_bundle.Installed | None = None
    identity_file: str | None = None


def load_identity(
    identity_file: Path | None, passphrase_file: Path | None, snapshot: Path, config: Config | None
) -> list[x25519.Identity]:
    """The key that opens ``snapshot``: an age identity file (the organiser's, or a box's
    backup-identity.key), or a passphrase that opens the ``backup-identity.age`` beside it, or, on
    the box itself, the box's own identity."""
    if identity_file is not None:
        found = []
        for line in identity_file.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.startswith("AGE-SECRET-KEY-"):
                try:
                    found.append(x25519.Identity.from_str(line))
                except Exception:
                    raise BackupFailed(f"{identity_file} holds a malformed age identity") from None
        if not found:
            raise BackupFailed(f"{identity_file} holds no age identity (a line starting AGE-SECRET-KEY-)")
        return found
    if passphrase_file is not None:
        wrapped = snapshot.parent / keys.WRAPPED_IDENTITY
        if not wrapped.exists():
            raise BackupFailed(
                f"no {keys.WRAPPED_IDENTITY} beside {snapshot.name}: this box had no backup passphrase; "
                "use --identity with the organiser's key"
            )
        secret = passphrase_file.read_text(encoding="utf-8").strip("\r\n")
        try:
            text = age_passphrase.decrypt(wrapped.read_bytes(), secret).decode("ascii")
        except Exception:
            raise BackupFailed(
                "the passphrase does not open backup-identity.age (wrong passphrase?)"
            ) from None
        return [x25519.Identity.from_str(text.strip())]
    if config is not None and (config.data_dir / keys.IDENTITY).exists():
        return [keys.box_identity(config)]
    raise BackupFailed("give the key that opens the snapshot: --identity FILE or --passphrase-file FILE")


def unpack(
    snapshot: Path,
    target: Path,
    identities: list[x25519.Identity],
    progress: Callable[[str], None] | None = None,
    *,
    box_id: str | None = None,
) -> Restored:
    """The first half of a restore and of a recovery (appliance/core/recovery.py): decrypt
    ``snapshot`` into the empty folder ``target``, check it (integrity and both chains; of box
    ``box_id`` when given), and put the box's identity back from its keys bundle. No new epoch and no
    audit record: the caller writes those last, after anything it appends. The caller cleans
    ``target`` on failure."""
    say = progress or (lambda _: None)
    if not snapshot.is_file():
        raise BackupFailed(f"no snapshot file at {snapshot}")
    os.chmod(target, 0o700)
    database = target / "venuebox.sqlite"
    say(f"decrypting {snapshot.name}")
    decrypt_to(snapshot, database, identities)
    os.chmod(database, 0o600)
    say("checking the database and its hash chains")
    problems = check_database(database)
    if problems:
        raise BackupFailed(f"{snapshot.name} decrypts but is not sound: {'; '.join(problems[:3])}")
    facts = database_facts(database)
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT box_id FROM box WHERE id = 1").fetchone()
    snapshot_box = row[0] if row is not None else ""
    if box_id is not None and snapshot_box != box_id:
        raise BackupFailed(
            f"{snapshot.name} is a snapshot of box {snapshot_box}, not of box {box_id} (--data-dir): "
            "restore it without --data-dir, with the key that opens it (--identity or --passphrase-file)"
        )
    found = _box_keys(snapshot, database, identities, snapshot_box, keys_bundle.mark_of(facts))
    installed = None
    with contextlib.closing(connect(database)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        if found is not None:
            say(f"box keys and identity from {found.identity_file}")
            installed = keys_bundle.install(found.bundle, target, conn)
        if installed is None or not installed.admin_token:
            write_secret(target / "admin.token", secrets.token_urlsafe(32))
        # The old box's snapshots are not this box's: its retention must never touch them.
        conn.execute("DELETE FROM snapshots")
        conn.execute("COMMIT")
    return Restored(
        target,
        facts["ledger_rows"],
        facts["ledger_head"],
        found is not None,
        found.keys_file if found is not None else None,
        found.opened if found is not None else None,
        snapshot_box,
        installed,
        found.identity_file if found is not None else None,
    )


@dataclass(frozen=True)
class _FoundKeys:
    bundle: keys_bundle.KeysBundle  # the identity, with the personal-data key that opens the snapshot
    keys_file: str  # the file that personal-data key came from
    identity_file: str  # the file the rest came from
    opened: bool | None


def _box_keys(
    snapshot: Path,
    database: Path,
    identities: list[x25519.Identity],
    box_id: str,
    mark: keys_bundle.DatabaseMark,
) -> _FoundKeys | None:
    """The keys bundle beside ``snapshot`` (its database decrypted at ``database``): the identity
    from the snapshot's own ``snapshot-<time>.keys.age``, else from ``keys.age`` (the newest bundle,
    for a snapshot taken before bundles were written per snapshot), else from a ``keys-<key id>.age``
    a personal-data key rotation kept; the personal-data key from the first of those whose key
    opens the snapshot's personal data (else the first one's: the scores do not need it). The
    snapshot's own bundle, or the ``keys.age`` used in its place, of another box or written with
    another database is refused (BackupFailed); a kept one that does not fit is passed over. None
    when there is no keys file at all."""
    folder = snapshot.parent
    own = keys_bundle.bundle_name(snapshot.name)
    kept = sorted(folder.glob("keys-*.age"), key=lambda path: path.stat().st_mtime, reverse=True)
    candidates = [folder / name for name in ([own] if own else []) + [keys_bundle.KEYS_FILE]] + kept
    identity: tuple[str, keys_bundle.KeysBundle] | None = None
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        for path in candidates:
            if not path.is_file():
                continue
            # The one the identity would come from must fit; later ones only lend a personal-data key.
            decisive = identity is None and path.name in (own, keys_bundle.KEYS_FILE)
            try:
                bundle = keys_bundle.decode(pyrage.decrypt(path.read_bytes(), identities), path.name)
                refused = keys_bundle.belongs(bundle, path.name, snapshot.name, box_id, mark)
                if refused is not None:
                    raise keys_bundle.BundleRefused(refused)
            except pyrage.DecryptError as exc:
                if decisive:
                    raise BackupFailed(
                        f"{path.name} beside {snapshot.name} could not be decrypted with the key given "
                        f"({exc})"
                    ) from None
                continue  # a kept file from before an organiser key was configured, say
            except keys_bundle.BundleRefused:
                if decisive:
                    raise
                continue
            if identity is None:
                identity = (path.name, bundle)
            opened = data_key.opens(conn, base64.b64decode(bundle.personal_data_key))
            if opened is not False:
                merged = msgspec.structs.replace(identity[1], personal_data_key=bundle.personal_data_key)
                return _FoundKeys(merged, path.name, identity[0], opened)
    if identity is None:
        return None
    return _FoundKeys(identity[1], identity[0], identity[0], False)
