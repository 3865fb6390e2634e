"""The reference receiver's state: its SQLite schema, the records it stores per box, the batches it
has answered, and ``boxes.json`` (box id -> uplink token).

Plain functions over a connection, run through ``appliance.core.storage.Store`` (one writer thread,
group commit), so the HTTP layer in ``uplink/receiver.py`` and the CLI share one library API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from appliance.shared.errors import DomainError, IdempotencyMismatch, MalformedRequest, NotAuthenticated
from appliance.shared.secrets_files import read_secret, write_secret
from appliance.shared.times import now_rfc3339, parse_rfc3339
from uplink.protocol import RECORD_KINDS, Record, RecordsAck, Rejected

DB_FILE = "receiver.sqlite"
BOXES_FILE = "boxes.json"
RUNTIME_FILE = "receiver.json"
MAX_RECORD_ID_CHARS = 200
MAX_IDEMPOTENCY_KEY_CHARS = 200
_BOX_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_LEDGER_HASH = re.compile(r"^[0-9a-f]{64}$")
# The box's hash chains the receiver keeps unforked, by the kind of record that carries their rows.
CHAIN_OF_KIND = {"sheet": "sheets", "audit": "audit"}
CHAINS = tuple(CHAIN_OF_KIND.values())

log = logging.getLogger("venuebox.receiver")

migrations = Migrations("venuebox-receiver")


@migrations()
def m001_records(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE records (
            seq INTEGER PRIMARY KEY,
            box_id TEXT NOT NULL,
            record_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            created_at TEXT NOT NULL,
            payload TEXT NOT NULL,
            received_at TEXT NOT NULL,
            batch_id TEXT NOT NULL,
            UNIQUE (box_id, record_id)
        );
        CREATE INDEX records_box_seq ON records (box_id, seq);

        CREATE TABLE batches (
            box_id TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            body_sha256 TEXT NOT NULL,
            answer BLOB NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (box_id, idempotency_key)
        );
        """
    )


@migrations()
def m002_sheet_chain(db: Database) -> None:
    # Each stored sheet's place in its box's ledger (issue 15): one sheet per (box, ledger seq), so
    # a batch that would put a second, different sheet there is refused as a fork. Sheets stored
    # before this version are placed in the order they were stored: where two already disagree (a
    # fork let in before), the first stored keeps the place and the other stays in ``records``,
    # outside the chain (nothing is deleted).
    db.executescript(
        """
        CREATE TABLE sheet_chain (
            box_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            record_seq INTEGER NOT NULL REFERENCES records (seq),
            PRIMARY KEY (box_id, seq)
        ) WITHOUT ROWID;

        INSERT OR IGNORE INTO sheet_chain (box_id, seq, hash, record_seq)
            SELECT box_id, json_extract(payload, '$.seq'), json_extract(payload, '$.hash'), seq
            FROM records
            WHERE kind = 'sheet'
              AND json_type(payload, '$.seq') = 'integer' AND json_extract(payload, '$.seq') >= 1
              AND json_type(payload, '$.hash') = 'text'
            ORDER BY seq;
        """
    )
    forks = db.execute(
        "SELECT count(*) FROM records r JOIN sheet_chain c"
        " ON c.box_id = r.box_id AND c.seq = json_extract(r.payload, '$.seq')"
        " WHERE r.kind = 'sheet' AND c.record_seq != r.seq AND c.hash != json_extract(r.payload, '$.hash')"
    ).fetchone()[0]
    if forks:
        log.warning(
            "%d sheet record(s) stored before this version disagree with the sheet stored first at "
            "their ledger seq (forks): they stay in the records, outside their box's chain",
            forks,
        )


@migrations()
def m003_chain_places(db: Database) -> None:
    # The audit log is a chain of the box too (PROTOCOL.md, "Recovery and the safe watermark"): the
    # receiver keys a place by (box, chain, seq), "sheets" (the ledger) or "audit" (the audit log),
    # in one table that replaces sheet_chain (its places are copied over as they are). Audit
    # records stored before this version are placed the way m002 placed the sheets: in the order
    # they were stored, the first keeping a place two disagree on (the other stays in ``records``,
    # outside the chain). Plain statements, not a script: they stay in the migration's transaction.
    db.execute(
        """
        CREATE TABLE chain_places (
            box_id TEXT NOT NULL,
            chain TEXT NOT NULL CHECK (chain IN ('sheets', 'audit')),
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            record_seq INTEGER NOT NULL REFERENCES records (seq),
            PRIMARY KEY (box_id, chain, seq)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        "INSERT INTO chain_places (box_id, chain, seq, hash, record_seq)"
        " SELECT box_id, 'sheets', seq, hash, record_seq FROM sheet_chain"
    )
    db.execute("DROP TABLE sheet_chain")
    db.execute(
        """
        INSERT OR IGNORE INTO chain_places (box_id, chain, seq, hash, record_seq)
            SELECT box_id, 'audit', json_extract(payload, '$.seq'), json_extract(payload, '$.hash'), seq
            FROM records
            WHERE kind = 'audit'
              AND json_type(payload, '$.seq') = 'integer' AND json_extract(payload, '$.seq') >= 1
              AND json_type(payload, '$.hash') = 'text' AND length(json_extract(payload, '$.hash')) = 64
              AND json_extract(payload, '$.hash') NOT GLOB '*[^0-9a-f]*'
            ORDER BY seq
        """
    )
    forks = db.execute(
        "SELECT count(*) FROM records r JOIN chain_places c"
        " ON c.box_id = r.box_id AND c.chain = 'audit' AND c.seq = json_extract(r.payload, '$.seq')"
        " WHERE r.kind = 'audit' AND c.record_seq != r.seq AND c.hash != json_extract(r.payload, '$.hash')"
    ).fetchone()[0]
    if forks:
        log.warning(
            "%d audit record(s) stored before this version disagree with the audit record stored first "
            "at their audit-log seq (forks): they stay in the records, outside their box's chain",
            forks,
        )


def migrate(db: Database) -> int:
    """Apply the receiver's pending migrations; returns its schema version."""
    migrations.apply(db)
    version = len(migrations.applied(db))
    db.execute(f"PRAGMA user_version = {int(version)}")
    return version


# -- errors the HTTP layer maps to problems ------------------------------------------------------


class UplinkUnauthenticated(NotAuthenticated):
    """The bearer token is missing or not this box's, or the body's signature does not hold."""


class SignatureClockSkew(UplinkUnauthenticated):
    """The signature's time is too far from the receiver's clock: the sender's clock is off. Its own
    problem type, because the sender can fix it alone (sign with the receiver's time from the
    ``Date`` header) where a wrong token needs a person."""


class IdempotencyKeyRequired(MalformedRequest):
    """A batch came without a usable ``Idempotency-Key``."""


class BatchKeyReused(IdempotencyMismatch):
    """An ``Idempotency-Key`` that already answered one body came with another."""


class BatchTooLarge(DomainError):
    """More records in one batch than the protocol allows."""


class ChainFork(DomainError):
    """A batch would put a second, different record at a place of one of the box's chains (a sheet
    at a ledger seq, an audit record at an audit-log seq): the receiver already holds another one
    (another hash) there, or two records of the batch disagree. ``extra`` has ``chain`` ("sheets"
    or "audit"), ``seq``, ``held_hash``, ``offered_hash`` and ``record_id``. Nothing of the batch
    is stored."""


class BoxRefused(DomainError):
    """``add-box`` with a box id that cannot be used, or for a box that has a token (no ``--rotate``)."""


# -- boxes.json ----------------------------------------------------------------------------------


def check_box_id(box_id: str) -> str:
    if not _BOX_ID.match(box_id):
        raise BoxRefused(
            f"box id {box_id!r} must be 1-100 characters of A-Z a-z 0-9 . _ : - (e.g. vb-3f2a9c01d4e5)"
        )
    return box_id


def load_boxes(data_dir: Path) -> dict[str, str]:
    """Box id -> uplink token; empty when no box was added yet. Refuses a file others can read."""
    path = data_dir / BOXES_FILE
    if not path.exists():
        return {}
    return json.loads(read_secret(path))


def private_dir(data_dir: Path) -> Path:
    """The receiver's data dir, made (or narrowed) to 0700: it holds every box's records and tokens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    return data_dir


def add_box(data_dir: Path, box_id: str, rotate: bool = False) -> str:
    """Issue a new 256-bit uplink token for ``box_id`` and store it (0600, atomically); returns it.
    A box that already has one keeps it unless ``rotate``: then the old token stops working."""
    check_box_id(box_id)
    private_dir(data_dir)
    boxes = load_boxes(data_dir)
    if box_id in boxes and not rotate:
        raise BoxRefused(
            f"box {box_id} already has an uplink token: pass --rotate to replace it "
            "(the box must then be configured with the new one)"
        )
    boxes[box_id] = secrets.token_urlsafe(32)
    write_secret(data_dir / BOXES_FILE, json.dumps(boxes, indent=2, sort_keys=True))
    return boxes[box_id]


class BoxTokens:
    """``boxes.json`` as the running receiver sees it: re-read when the file changes, so
    ``add-box`` (and ``--rotate``) take effect without a restart."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / BOXES_FILE
        self._data_dir = data_dir
        self._seen: tuple[int, int, int] | None = None
        self._tokens: dict[str, str] = {}
        # Compared against when the box is unknown, so the answer takes as long as for a known box.
        self._decoy = secrets.token_urlsafe(32)

    def _current(self) -> dict[str, str]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen != self._seen:
            self._tokens = load_boxes(self._data_dir)
            self._seen = seen
        return self._tokens

    def check(self, box_id: str, token: str | None) -> str | None:
        """None when ``token`` is ``box_id``'s uplink token, else why not (a metrics label:
        no-token, unknown-box, wrong-token)."""
        if not token:
            return "no-token"
        expected = self._current().get(box_id)
        matches = hmac.compare_digest(token.encode("utf-8"), (expected or self._decoy).encode("utf-8"))
        if expected is None:
            return "unknown-box"
        return None if matches else "wrong-token"

    def token(self, box_id: str) -> str:
        return self._current()[box_id]


# -- batches -------------------------------------------------------------------------------------


@dataclass
class Batch:
    """A batch checked record by record: rows ready to insert, the ids to ack, the rejected ones."""

    rows: list[tuple[str, str, str, str]]  # record_id, kind, created_at, payload JSON
    acked: list[str]
    rejected: list[Rejected]
    # Per row: its place in one of its box's chains (chain, seq, hash) for a sheet (the ledger) or
    # an audit record (the audit log); None for other kinds.
    positions: list[tuple[str, int, str] | None] = field(default_factory=list)


@dataclass
class BatchOutcome:
    answer: bytes  # the RecordsAck JSON, byte for byte what every replay of the batch gets
    stored: int
    duplicate: int
    rejected: int
    replayed: bool


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def record_problem(record: Record) -> str | None:
    """Why the receiver will never store ``record`` as sent, or None when it is fine."""
    if not isinstance(record.id, str) or not record.id:
        return "id: must be a non-empty string"
    if len(record.id) > MAX_RECORD_ID_CHARS:
        return f"id: at most {MAX_RECORD_ID_CHARS} characters"
    if record.kind not in RECORD_KINDS:
        return f"kind: must be one of {', '.join(RECORD_KINDS)}"
    try:
        parse_rfc3339(record.created_at)
    except ValueError as exc:
        return f"created_at: {exc}"
    if not isinstance(record.payload, dict):
        return "payload: must be a JSON object"
    if record.kind in CHAIN_OF_KIND:
        return _chain_position_problem(record.kind, record.payload)
    return None


def _chain_position_problem(kind: str, payload: dict[str, Any]) -> str | None:
    # A record without its chain place could not be checked for a fork: it is not stored.
    what, chain = ("a sheet", "ledger") if kind == "sheet" else ("an audit", "audit-log")
    seq = payload.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return f"payload.seq: {what} record carries its {chain} seq, an integer from 1"
    chain_hash = payload.get("hash")
    if not isinstance(chain_hash, str) or not _LEDGER_HASH.match(chain_hash):
        return f"payload.hash: {what} record carries its {chain} hash, 64 lowercase hex digits"
    return None


def check_batch(records: list[Record]) -> Batch:
    """Sort a batch's records into the good (to store and ack) and the rejected, keeping order."""
    batch = Batch([], [], [])
    encode = msgspec.json.encode
    for record in records:
        problem = record_problem(record)
        if problem is None:
            batch.rows.append((record.id, record.kind, record.created_at, encode(record.payload).decode()))
            chain = CHAIN_OF_KIND.get(record.kind)
            batch.positions.append((chain, record.payload["seq"], record.payload["hash"]) if chain else None)
            batch.acked.append(record.id)
        else:
            record_id = record.id if isinstance(record.id, str) else ""
            batch.rejected.append(Rejected(id=record_id, status=422, reason=problem))
    return batch


def stored_answer(conn: sqlite3.Connection, box_id: str, key: str, digest: str) -> bytes | None:
    """The answer already given to this batch (same key, same body), None for a new key;
    BatchKeyReused when the key answered another body."""
    row = conn.execute(
        "SELECT body_sha256, answer FROM batches WHERE box_id = ? AND idempotency_key = ?", (box_id, key)
    ).fetchone()
    if row is None:
        return None
    if row[0] != digest:
        raise BatchKeyReused(
            f"Idempotency-Key {key!r} was already used for a different batch: "
            "send a new key for new content, the same body to get the first answer again"
        )
    return bytes(row[1])


def store_batch(conn: sqlite3.Connection, box_id: str, key: str, digest: str, batch: Batch) -> BatchOutcome:
    """Store a checked batch in the writer's transaction: every good record once (a record id the
    box sent before is acked again, not stored again; so is a sheet or an audit record whose chain
    place and hash are held already, under whatever record id), and the answer under the batch's
    key. ChainFork, and nothing stored (not even the answer), when a record would fork its box's
    ledger or audit log."""
    answer = stored_answer(conn, box_id, key, digest)
    if answer is not None:  # the same batch raced in on another connection and won
        return BatchOutcome(answer, 0, 0, 0, replayed=True)
    rows = _rows_to_store(conn, box_id, batch)
    received_at = now_rfc3339()
    last_seq = conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO records (box_id, record_id, kind, created_at, payload, received_at, batch_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(box_id, *row, received_at, key) for row in rows],
    )
    stored = conn.total_changes - before
    if stored and any(batch.positions):
        # The sheets and audit records just stored take their places; each place was free (checked
        # above), and the primary key would refuse a second record anyway, failing the whole batch.
        conn.execute(
            "INSERT INTO chain_places (box_id, chain, seq, hash, record_seq)"
            " SELECT box_id, CASE kind WHEN 'sheet' THEN 'sheets' ELSE 'audit' END,"
            " json_extract(payload, '$.seq'), json_extract(payload, '$.hash'), seq"
            " FROM records WHERE seq > ? AND kind IN ('sheet', 'audit')",
            (last_seq,),
        )
    answer = msgspec.json.encode(RecordsAck(acked=batch.acked, rejected=batch.rejected))
    conn.execute(
        "INSERT INTO batches (box_id, idempotency_key, body_sha256, answer, received_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (box_id, key, digest, answer, received_at),
    )
    return BatchOutcome(answer, stored, len(batch.rows) - stored, len(batch.rejected), replayed=False)


def _rows_to_store(conn: sqlite3.Connection, box_id: str, batch: Batch) -> list[tuple[str, str, str, str]]:
    """The batch's rows minus the sheets and audit records whose chain place already holds the same
    record (acked, not stored again: exactly one record per ledger or audit-log row). ChainFork
    when a record's place holds another one, at the receiver or earlier in the batch, unless that
    very record id is stored already (a resend of a stored record is always acked, as before)."""
    wanted = [[p[0], p[1]] for p in batch.positions if p is not None]
    if not wanted:
        return batch.rows
    held = conn.execute(
        # CROSS JOIN: the batch's places drive the loop, each one primary-key lookup (a plain join
        # may scan all of the box's places instead).
        "SELECT c.chain, c.seq, c.hash FROM json_each(?) w CROSS JOIN chain_places c ON c.box_id = ?"
        " AND c.chain = json_extract(w.value, '$[0]') AND c.seq = json_extract(w.value, '$[1]')",
        (json.dumps(wanted), box_id),
    ).fetchall()
    # (chain, seq) -> (hash, held by the receiver rather than an earlier record of the batch)
    places: dict[tuple[str, int], tuple[str, bool]] = {(c, seq): (h, True) for c, seq, h in held}
    rows = []
    forks: list[tuple[str, str, int, str, bool, str]] = []  # record id, chain, seq, hash there, held, offered
    for row, position in zip(batch.rows, batch.positions, strict=True):
        if position is None:
            rows.append(row)
            continue
        chain, seq, offered = position
        placed = places.get((chain, seq))
        if placed is None:
            places[(chain, seq)] = (offered, False)
            rows.append(row)
        elif placed[0] != offered:
            forks.append((row[0], chain, seq, placed[0], placed[1], offered))
    if forks:
        stored = {
            r[0]
            for r in conn.execute(
                "SELECT record_id FROM records WHERE box_id = ? AND record_id IN"
                " (SELECT value FROM json_each(?))",
                (box_id, json.dumps([fork[0] for fork in forks])),
            )
        }
        forks = [fork for fork in forks if fork[0] not in stored]
    if forks:
        record_id, chain, seq, there, held_here, offered = forks[0]
        a_what, what, place, chain_name = (
            ("a sheet", "sheet", "ledger seq", "ledger")
            if chain == "sheets"
            else ("an audit record", "audit record", "audit-log seq", "audit log")
        )
        where = (
            f"the receiver already holds a different {what} there"
            if held_here
            else f"an earlier record of this batch puts a different {what} there"
        )
        raise ChainFork(
            f"record {record_id} puts {a_what} at {place} {seq} of box {box_id}, but {where} (hash "
            f"held {there}, hash offered {offered}): the box's {chain_name} and the receiver's copy "
            "disagree. Nothing of this batch was stored.",
            chain=chain,
            seq=seq,
            held_hash=there,
            offered_hash=offered,
            record_id=record_id,
        )
    return rows


class StoredRecord(msgspec.Struct, kw_only=True):
    seq: int
    id: str
    kind: str
    created_at: str
    payload: msgspec.Raw  # stored JSON text, sent on as it is
    received_at: str


class RecordsPage(msgspec.Struct, kw_only=True):
    records: list[StoredRecord]
    last_seq: int  # pass it as the next ``after``; the same ``after`` when nothing is newer


def records_after(conn: sqlite3.Connection, box_id: str, after: int, limit: int) -> RecordsPage:
    """Up to ``limit`` of the box's records with seq > ``after``, ascending."""
    rows = conn.execute(
        "SELECT seq, record_id, kind, created_at, payload, received_at FROM records "
        "WHERE box_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (box_id, after, limit),
    ).fetchall()
    records = [
        StoredRecord(
            seq=r[0],
            id=r[1],
            kind=r[2],
            created_at=r[3],
            payload=msgspec.Raw(r[4].encode()),
            received_at=r[5],
        )
        for r in rows
    ]
    return RecordsPage(records=records, last_seq=records[-1].seq if records else after)


class ChainHead(msgspec.Struct, kw_only=True):
    seq: int  # the highest seq of the chain the receiver holds a record for
    hash: str  # that record's chain hash


class ChainEntry(msgspec.Struct, kw_only=True):
    seq: int  # the box's chain seq (not the receiver's record seq)
    hash: str
    id: str
    created_at: str
    payload: msgspec.Raw  # stored JSON text, sent on as it is
    received_at: str


class ChainPage(msgspec.Struct, kw_only=True):
    chain: str  # "sheets" (the ledger) or "audit" (the audit log)
    head: ChainHead | None  # None: the receiver holds no record of this chain of the box
    held: int  # equal to head.seq when the receiver's copy has no gap
    entries: list[ChainEntry]
    last_seq: int  # pass it as the next ``after``; the same ``after`` when nothing is newer


class LedgerPage(msgspec.Struct, kw_only=True):
    """``GET /ledger``'s answer: the ``sheets`` chain under the names it had before the audit log."""

    head: ChainHead | None
    sheets_held: int
    sheets: list[ChainEntry]
    last_seq: int


def chain_after(conn: sqlite3.Connection, box_id: str, chain: str, after: int, limit: int) -> ChainPage:
    """The receiver's copy of one of the box's chains (``CHAINS``): where it ends (the highest seq
    held and its hash, and how many places are held), and up to ``limit`` of its records with chain
    seq > ``after``, in chain order. What a recovering box reads to continue its ledger or audit log
    from exactly where the receiver has it."""
    head = conn.execute(
        "SELECT seq, hash FROM chain_places WHERE box_id = ? AND chain = ? ORDER BY seq DESC LIMIT 1",
        (box_id, chain),
    ).fetchone()
    held = conn.execute(
        "SELECT count(*) FROM chain_places WHERE box_id = ? AND chain = ?", (box_id, chain)
    ).fetchone()[0]
    rows = conn.execute(
        "SELECT c.seq, c.hash, r.record_id, r.created_at, r.payload, r.received_at FROM chain_places c"
        " JOIN records r ON r.seq = c.record_seq WHERE c.box_id = ? AND c.chain = ? AND c.seq > ?"
        " ORDER BY c.seq LIMIT ?",
        (box_id, chain, after, limit),
    ).fetchall()
    entries = [
        ChainEntry(
            seq=r[0],
            hash=r[1],
            id=r[2],
            created_at=r[3],
            payload=msgspec.Raw(r[4].encode()),
            received_at=r[5],
        )
        for r in rows
    ]
    return ChainPage(
        chain=chain,
        head=ChainHead(seq=head[0], hash=head[1]) if head else None,
        held=held,
        entries=entries,
        last_seq=entries[-1].seq if entries else after,
    )


def ledger_after(conn: sqlite3.Connection, box_id: str, after: int, limit: int) -> LedgerPage:
    """``chain_after`` for the ledger, in ``GET /ledger``'s shape."""
    page = chain_after(conn, box_id, "sheets", after, limit)
    return LedgerPage(head=page.head, sheets_held=page.held, sheets=page.entries, last_seq=page.last_seq)


def runtime_info(data_dir: Path) -> dict[str, Any] | None:
    """Where a running receiver listens (``receiver.json``, removed at a clean stop), or None."""
    try:
        return json.loads((data_dir / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None
