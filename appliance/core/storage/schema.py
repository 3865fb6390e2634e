"""The database schema, as versioned migrations.

Migrations are sqlite-utils ``Migrations`` (recorded in ``_sqlite_migrations``); after they run,
``PRAGMA user_version`` is set to the number applied, so a plain ``sqlite3`` session (or a tech with
``PRAGMA user_version;``) can tell the schema version without our code. Migrations are append-only:
never edit one that has shipped, add the next.

The score ledger (``sheets``) and the ``audit_log`` are append-only, enforced by triggers that abort
any UPDATE or DELETE, and hash-chained (see ``appliance/core/chain.py``).
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from appliance.shared.times import to_rfc3339, utcnow

migrations = Migrations("venuebox")


def _append_only(db: Database, table: str) -> None:
    for op in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )


@migrations()
def m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE box (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            box_id TEXT NOT NULL,
            name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            event_id TEXT,
            frozen INTEGER NOT NULL DEFAULT 0,
            freeze_reason TEXT,
            frozen_at TEXT,
            frozen_by TEXT
        );

        CREATE TABLE events (
            event_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            timezone TEXT NOT NULL,
            snapshot_id TEXT NOT NULL,
            imported_at TEXT NOT NULL,
            extra TEXT NOT NULL DEFAULT '{}'
        );

        CREATE TABLE criteria (
            event_id TEXT NOT NULL REFERENCES events(event_id),
            key TEXT NOT NULL,
            label TEXT NOT NULL,
            min REAL NOT NULL,
            max REAL NOT NULL,
            step REAL NOT NULL,
            position INTEGER NOT NULL,
            extra TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (event_id, key)
        );

        CREATE TABLE sessions (
            event_id TEXT NOT NULL REFERENCES events(event_id),
            session_id TEXT NOT NULL,
            name TEXT NOT NULL,
            stage TEXT,
            starts_at TEXT,
            position INTEGER NOT NULL,
            extra TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (event_id, session_id)
        );

        CREATE TABLE entries (
            event_id TEXT NOT NULL,
            entry_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            running_order INTEGER NOT NULL,
            scheduled_at TEXT,
            title TEXT NOT NULL,
            category TEXT,
            division TEXT,
            level TEXT,
            studio TEXT,
            -- AES-256-GCM ciphertext (appliance/core/personal.py), never plaintext.
            participants_enc TEXT,
            extra TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (event_id, entry_id),
            FOREIGN KEY (event_id, session_id) REFERENCES sessions(event_id, session_id)
        );
        CREATE INDEX entries_by_session ON entries(event_id, session_id, running_order);

        CREATE TABLE judges (
            event_id TEXT NOT NULL REFERENCES events(event_id),
            judge_id TEXT NOT NULL,
            name TEXT NOT NULL,
            all_sessions INTEGER NOT NULL DEFAULT 0,
            extra TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (event_id, judge_id)
        );

        CREATE TABLE panels (
            event_id TEXT NOT NULL,
            judge_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            PRIMARY KEY (event_id, judge_id, session_id),
            FOREIGN KEY (event_id, judge_id) REFERENCES judges(event_id, judge_id),
            FOREIGN KEY (event_id, session_id) REFERENCES sessions(event_id, session_id)
        );

        CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            event_id TEXT NOT NULL,
            judge_id TEXT NOT NULL,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            paired_at TEXT NOT NULL,
            paired_from TEXT,
            revoked_at TEXT
        );

        CREATE TABLE pairing_codes (
            code_id TEXT PRIMARY KEY,
            code_hash TEXT NOT NULL UNIQUE,
            event_id TEXT NOT NULL,
            judge_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            used_at TEXT,
            device_id TEXT
        );

        -- The score ledger. seq orders the hash chain; sheet_id is the client's idempotency key.
        CREATE TABLE sheets (
            seq INTEGER PRIMARY KEY,
            sheet_id TEXT NOT NULL UNIQUE,
            event_id TEXT NOT NULL,
            entry_id TEXT NOT NULL,
            judge_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            score_values TEXT NOT NULL,
            comment TEXT,
            submitted_at TEXT NOT NULL,
            received_at TEXT NOT NULL,
            supersedes TEXT REFERENCES sheets(sheet_id),
            content_hash TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        -- One original per (entry, judge) and no forks in a correction chain: the database itself
        -- refuses what the 409 rules refuse, so a bug above cannot store a second head.
        CREATE UNIQUE INDEX sheets_one_original ON sheets(event_id, entry_id, judge_id)
            WHERE supersedes IS NULL;
        CREATE UNIQUE INDEX sheets_one_successor ON sheets(supersedes) WHERE supersedes IS NOT NULL;
        CREATE INDEX sheets_by_entry_judge ON sheets(event_id, entry_id, judge_id);
        CREATE INDEX sheets_by_received ON sheets(received_at);

        CREATE TABLE audit_log (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL,
            request_id TEXT,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );

        -- Records for the uplink. A sheet's record points at its (append-only) ledger row instead
        -- of copying it; other kinds carry their payload.
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            record_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            created_at TEXT NOT NULL,
            payload TEXT,
            sheet_seq INTEGER REFERENCES sheets(seq),
            CHECK ((kind = 'sheet') = (sheet_seq IS NOT NULL) AND (payload IS NULL) = (sheet_seq IS NOT NULL))
        );

        CREATE TABLE presence (
            device_id TEXT PRIMARY KEY REFERENCES devices(device_id),
            last_seen_at TEXT NOT NULL,
            sent_at TEXT,
            clock_skew_s REAL,
            battery INTEGER,
            app_version TEXT,
            queue_depth INTEGER,
            address TEXT
        );

        CREATE TABLE heartbeats (
            id INTEGER PRIMARY KEY,
            device_id TEXT NOT NULL,
            received_at TEXT NOT NULL,
            sent_at TEXT,
            battery INTEGER,
            app_version TEXT,
            queue_depth INTEGER
        );
        CREATE INDEX heartbeats_by_device ON heartbeats(device_id, id);
        """
    )
    _append_only(db, "sheets")
    _append_only(db, "audit_log")


@migrations()
def m002_alerts(db: Database) -> None:
    # One row per condition (fingerprint): a condition that clears and comes back re-activates its
    # row and bumps ``count``, so a flapping tablet is one line for the tech, not a hundred.
    db.executescript(
        """
        CREATE TABLE alerts (
            fingerprint TEXT PRIMARY KEY,
            severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
            title TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            count INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1),
            active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
            cleared_at TEXT,
            acknowledged_at TEXT,
            acknowledged_by TEXT
        );
        CREATE INDEX alerts_active ON alerts(active);
        """
    )


@migrations()
def m003_freeze_category(db: Database) -> None:
    # Why the box is frozen, as a category the console can sort and count by; the free-text reason
    # stays what the judges see. NULL while not frozen.
    db.execute("ALTER TABLE box ADD COLUMN freeze_category TEXT")


@migrations()
def m004_uplink(db: Database) -> None:
    # Delivery state of the outbox (the uplink issue). A record is pending until the receiver acks
    # it (kept ``uplink_retention_h`` after that, then pruned) or rejects it (quarantined with the
    # receiver's reason until a tech retries it). ``batch_id`` names the batch it travels in: a
    # batch keeps its id, its records and so its body across retries and restarts.
    db.executescript(
        """
        ALTER TABLE outbox ADD COLUMN batch_id TEXT;
        ALTER TABLE outbox ADD COLUMN acked_at TEXT;
        ALTER TABLE outbox ADD COLUMN quarantined_at TEXT;
        ALTER TABLE outbox ADD COLUMN quarantine_reason TEXT;
        CREATE INDEX outbox_pending ON outbox(seq) WHERE acked_at IS NULL AND quarantined_at IS NULL;
        CREATE INDEX outbox_by_batch ON outbox(batch_id) WHERE batch_id IS NOT NULL;
        CREATE INDEX outbox_acked ON outbox(acked_at) WHERE acked_at IS NOT NULL;
        CREATE INDEX outbox_quarantined ON outbox(quarantined_at) WHERE quarantined_at IS NOT NULL;

        -- Where the outbox goes, as set by `venuebox uplink configure` (the token is in a 0600
        -- file, never here). Config keys (uplink_url, ...) take precedence when set.
        CREATE TABLE uplink_target (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            url TEXT NOT NULL,
            token_file TEXT NOT NULL,
            ca_file TEXT,
            configured_at TEXT NOT NULL,
            configured_by TEXT NOT NULL
        );

        -- The uplink worker's state, one row, so `venuebox uplink status`, the admin API, /metrics
        -- and the console all read the same thing, and a restart resumes where it stopped.
        CREATE TABLE uplink_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            state TEXT NOT NULL DEFAULT 'not configured',
            breaker TEXT NOT NULL DEFAULT 'closed' CHECK (breaker IN ('closed', 'open', 'half-open')),
            batch_id TEXT,
            batch_records INTEGER,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            last_attempt_at TEXT,
            last_success_at TEXT,
            last_error TEXT,
            last_error_at TEXT,
            paused_reason TEXT,
            paused_target TEXT,
            sync_requested_at TEXT,
            records_acked INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT
        );
        INSERT INTO uplink_state (id) VALUES (1);
        """
    )


@migrations()
def m005_snapshots(db: Database) -> None:
    # Encrypted local snapshots (appliance/core/backup.py): what each file holds (row counts, chain
    # heads), its SHA-256, and what the verification job found when it decrypted it again.
    db.executescript(
        """
        CREATE TABLE snapshots (
            name TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            created_at TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            ledger_rows INTEGER NOT NULL,
            ledger_head TEXT NOT NULL,
            audit_rows INTEGER NOT NULL,
            audit_head TEXT NOT NULL,
            row_counts TEXT NOT NULL,
            recipients INTEGER NOT NULL,
            verified_at TEXT,
            verify_ok INTEGER CHECK (verify_ok IN (0, 1)),
            verify_problem TEXT,
            deleted_at TEXT
        );
        CREATE INDEX snapshots_by_time ON snapshots(created_at);
        """
    )


@migrations()
def m006_device_token_expiry(db: Database) -> None:
    # When a device token stops working (appliance/core/devices.py ``token_expiry``); NULL for tablets
    # paired before tokens expired, which keep working until revoked.
    db.execute("ALTER TABLE devices ADD COLUMN expires_at TEXT")


@migrations()
def m007_personal_fields(db: Database) -> None:
    # The entries.csv columns an event package marks personal (event.json ``personal_columns``):
    # {column: AES-256-GCM ciphertext} as JSON, sealed field by field like participants_enc, never
    # plaintext. And the id (a short SHA-256, never the key) of the personal-data key that sealed
    # them, set by each rotation (appliance/core/data_key.py) in the transaction that re-encrypts them:
    # no row means never rotated, the key is personal-data.key as it is.
    db.executescript(
        """
        ALTER TABLE entries ADD COLUMN personal_enc TEXT;
        CREATE TABLE data_key (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            key_id TEXT NOT NULL,
            rotated_at TEXT NOT NULL
        );
        """
    )


@migrations()
def m008_ledger_epoch(db: Database) -> None:
    # The ledger's epoch (appliance/core/watermark.py): answers carry it with the safe watermark, and a
    # box rebuilt from its backups gets a new one, so tablets send again the sheets they keep.
    db.execute("ALTER TABLE box ADD COLUMN ledger_epoch TEXT")
    db.execute("UPDATE box SET ledger_epoch = lower(hex(randomblob(8)))")


@migrations()
def m009_recoveries(db: Database) -> None:
    # Each `venuebox recover` that built this data dir (appliance/core/recovery.py): when, and as JSON
    # what came from where (snapshot, salvage, cloud), what was not appended and why, and how far
    # the old ledger is known to have reached, for `venuebox status` and the console.
    db.execute("CREATE TABLE recoveries (id INTEGER PRIMARY KEY, at TEXT NOT NULL, detail TEXT NOT NULL)")


@migrations()
def m010_pairing_codes_keyed(db: Database) -> None:
    # Pairing codes are now stored as HMAC-SHA256 under the box's pairing key (appliance/core/pairing.py),
    # no longer as a bare SHA-256: a code made by an older venuebox can never match again, so its
    # row expires now rather than stay listed as a code waiting for a tablet. Make a new code.
    now = to_rfc3339(utcnow())
    db.execute("UPDATE pairing_codes SET expires_at = ? WHERE used_at IS NULL AND expires_at > ?", (now, now))


@migrations()
def m011_sign_offs_and_locks(db: Database) -> None:
    # Results at the venue (appliance/core/sessions.py). A judge's sign-off of a session: a row while
    # it holds (a tech's reopen deletes it); and each session's lock, one row per session that was
    # ever locked, ``locked`` 0 after an unlock (``reason``/``changed_at``/``changed_by`` say the last
    # change). Their history is the audit log (session.sign_off, session.reopen, session.lock,
    # session.unlock), which travels to the cloud. No foreign keys to sessions: an event import that
    # replaces its sessions must not be refused by them (states of a session that is gone are ignored).
    db.executescript(
        """
        CREATE TABLE sign_offs (
            event_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            judge_id TEXT NOT NULL,
            signed_off_at TEXT NOT NULL,
            device_id TEXT,
            PRIMARY KEY (event_id, session_id, judge_id)
        );
        CREATE TABLE session_locks (
            event_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            locked INTEGER NOT NULL CHECK (locked IN (0, 1)),
            reason TEXT NOT NULL,
            changed_at TEXT NOT NULL,
            changed_by TEXT NOT NULL,
            PRIMARY KEY (event_id, session_id)
        );
        """
    )


@migrations()
def m012_schedule_versions(db: Database) -> None:
    # Day-of schedule changes (appliance/core/schedule.py). An entry may be scratched (soft: it keeps
    # its row and its sheets, leaves results and "missing") and a walk-on may wait in the unscheduled
    # pool: ``session_id`` and ``running_order`` NULL. SQLite cannot drop a NOT NULL in place, so
    # ``entries`` is rebuilt with the same columns (nothing references it by foreign key). Changes
    # gather in ``schedule_draft`` (the change as JSON; a walk-on's participants sealed in ``sealed``,
    # never plaintext) until a publish makes the next row of ``schedule_versions``: its changes, its
    # diff and the whole schedule as it then was (sessions' starts_at; each entry's session, order,
    # scheduled_at and scratch), which a rollback copies.
    db.executescript(
        """
        CREATE TABLE entries_new (
            event_id TEXT NOT NULL,
            entry_id TEXT NOT NULL,
            session_id TEXT,
            running_order INTEGER,
            scheduled_at TEXT,
            title TEXT NOT NULL,
            category TEXT,
            division TEXT,
            level TEXT,
            studio TEXT,
            participants_enc TEXT,
            extra TEXT NOT NULL DEFAULT '{}',
            personal_enc TEXT,
            scratched INTEGER NOT NULL DEFAULT 0 CHECK (scratched IN (0, 1)),
            PRIMARY KEY (event_id, entry_id),
            FOREIGN KEY (event_id, session_id) REFERENCES sessions(event_id, session_id),
            CHECK ((session_id IS NULL) = (running_order IS NULL))
        );
        INSERT INTO entries_new (event_id, entry_id, session_id, running_order, scheduled_at, title,
                                 category, division, level, studio, participants_enc, extra, personal_enc)
            SELECT event_id, entry_id, session_id, running_order, scheduled_at, title, category, division,
                   level, studio, participants_enc, extra, personal_enc FROM entries;
        DROP TABLE entries;
        ALTER TABLE entries_new RENAME TO entries;
        CREATE INDEX entries_by_session ON entries(event_id, session_id, running_order);

        CREATE TABLE schedule_draft (
            seq INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL,
            change TEXT NOT NULL,
            sealed TEXT
        );
        CREATE TABLE schedule_versions (
            event_id TEXT NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            changes TEXT NOT NULL,
            diff TEXT NOT NULL,
            snapshot TEXT NOT NULL,
            PRIMARY KEY (event_id, version)
        );
        """
    )


def migrate(db: Database) -> int:
    """Apply pending migrations; returns the schema version (also stored in ``user_version``)."""
    migrations.apply(db)
    version = len(migrations.applied(db))
    db.execute(f"PRAGMA user_version = {int(version)}")
    return version
