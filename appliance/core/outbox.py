"""The outbox: records waiting for the uplink, written in the same transaction as what they carry,
and their delivery: batches, acks, quarantine, retention.

A sheet's record holds no copy of the sheet: it points at its ledger row (``sheet_seq``), which is
append-only, and the payload is built from that row when the record is read for sending. Other
kinds (audit and so on) carry their payload as canonical JSON.

Delivery, as the uplink worker drives it (every function here runs inside one transaction):

* A record is **pending** until the receiver acks it (``acked_at``; kept for the retention period,
  then pruned) or rejects it as invalid (``quarantined_at`` with the receiver's reason; it waits for
  a tech's ``venuebox uplink retry`` while the rest of the queue keeps flowing).
* The batch to send is the one already open (``resume_batch``: same id, same records, so the same
  body on every retry and after a restart), else the oldest pending records, bounded by count and
  bytes, under a new id (``prepare_batch`` on a read snapshot, made the open one by
  ``assign_batch``). ``close_batch`` applies the receiver's answer.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from appliance.shared.admin_wire import QuarantinedRecord
from appliance.shared.canonical import canonical_json
from appliance.shared.sheets import SheetRecord, StoredSheet
from appliance.shared.status import OutboxBacklog
from appliance.shared.times import now_rfc3339, parse_rfc3339, to_rfc3339
from appliance.storage.db import notify

PENDING = "acked_at IS NULL AND quarantined_at IS NULL"
# The store's notice (``Store.listen``) once records are queued: the uplink worker sends them at once.
QUEUED = "outbox-queued"
_O_PENDING = "o.acked_at IS NULL AND o.quarantined_at IS NULL"
_encode = msgspec.json.Encoder().encode


def new_record_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Time-ordered ids land at
    the end of the receiver's unique index instead of all over it: with random ids, a receiver
    holding 100,000 records writes four times the pages per batch and commits six times slower."""
    rand = int.from_bytes(os.urandom(10), "big")
    ms = time.time_ns() // 1_000_000 & ((1 << 48) - 1)
    value = ms << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def enqueue(conn: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> str:
    """Queue one record with its own payload, inside the caller's transaction; returns its id."""
    record_id = new_record_id()
    conn.execute(
        "INSERT INTO outbox (record_id, kind, created_at, payload) VALUES (?, ?, ?, ?)",
        (record_id, kind, now_rfc3339(), canonical_json(payload)),
    )
    notify(conn, QUEUED)
    return record_id


def enqueue_sheets(conn: sqlite3.Connection, sheet_seqs: list[int]) -> None:
    """Queue one 'sheet' record per stored ledger row, in ledger order."""
    created_at = now_rfc3339()
    conn.executemany(
        "INSERT INTO outbox (record_id, kind, created_at, sheet_seq) VALUES (?, 'sheet', ?, ?)",
        [(new_record_id(), created_at, seq) for seq in sheet_seqs],
    )
    if sheet_seqs:
        notify(conn, QUEUED)


def _records(conn: sqlite3.Connection, where: str, params: tuple[Any, ...], limit: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT o.seq AS outbox_seq, o.record_id, o.kind, o.created_at, o.payload, s.* FROM outbox o"
        f" LEFT JOIN sheets s ON s.seq = o.sheet_seq WHERE {where} ORDER BY o.seq LIMIT ?",
        (*params, limit),
    ).fetchall()


# -- batches --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One request's worth of records: ``body`` is the exact JSON sent, the same on every retry."""

    batch_id: str
    record_ids: list[str]
    seqs: list[int]
    body: bytes

    def __len__(self) -> int:
        return len(self.record_ids)


class _Record(msgspec.Struct):
    id: str
    kind: str
    created_at: str
    payload: SheetRecord | msgspec.Raw


def _encoded(row: sqlite3.Row) -> bytes:
    """A record as it travels: a sheet's payload is its ledger row (``SheetRecord``), with the
    stored canonical JSON of the values as it is; another kind's is its stored payload as it is."""
    if row["kind"] == "sheet":
        payload: SheetRecord | msgspec.Raw = SheetRecord(
            **{name: row[name] for name in StoredSheet.__struct_fields__},
            event_id=row["event_id"],
            device_id=row["device_id"],
            values=msgspec.Raw(row["score_values"].encode()),
            comment=row["comment"],
            submitted_at=row["submitted_at"],
            content_hash=row["content_hash"],
            prev_hash=row["prev_hash"],
        )
    else:
        payload = msgspec.Raw(row["payload"].encode())
    return _encode(_Record(row["record_id"], row["kind"], row["created_at"], payload))


def _body(parts: list[bytes]) -> bytes:
    return b'{"records":[' + b",".join(parts) + b"]}"


def _batch(batch_id: str, rows: list[sqlite3.Row], max_bytes: int | None = None) -> Batch:
    parts: list[bytes] = []
    size = len(_body([]))
    for row in rows:
        part = _encoded(row)
        if max_bytes is not None and parts and size + len(part) + 1 > max_bytes:
            break
        parts.append(part)
        size += len(part) + 1
    taken = rows[: len(parts)]
    return Batch(batch_id, [r["record_id"] for r in taken], [r["outbox_seq"] for r in taken], _body(parts))


def resume_batch(conn: sqlite3.Connection) -> Batch | None:
    """The open batch (still pending records under the state's batch id), rebuilt byte for byte:
    a retry, even after a restart, sends the same id with the same body. None when there is none."""
    state = conn.execute("SELECT batch_id FROM uplink_state WHERE id = 1").fetchone()
    if state is None or not state[0]:
        return None
    rows = _records(conn, f"o.batch_id = ? AND {_O_PENDING}", (state[0],), 1 << 30)
    return _batch(state[0], rows) if rows else None


def prepare_batch(
    conn: sqlite3.Connection, max_records: int, max_bytes: int, after_seq: int = 0
) -> Batch | None:
    """A new batch (read only; ``assign_batch`` makes it the open one): the oldest pending records
    after ``after_seq``, at most ``max_records`` and ``max_bytes`` of body, but always at least one
    record, so an oversized one is sent alone and the receiver's answer decides."""
    rows = _records(conn, f"o.seq > ? AND {_O_PENDING}", (after_seq,), max_records)
    return _batch(str(uuid.uuid4()), rows, max_bytes) if rows else None


def assign_batch(conn: sqlite3.Connection, batch: Batch) -> bool:
    """Make ``batch`` the open one (in the writer's transaction). False, and nothing changed, when
    one of its records is no longer pending (it was prepared on a snapshot that has moved on)."""
    seqs = json.dumps(batch.seqs)
    in_the_batch = f"{PENDING} AND seq IN (SELECT value FROM json_each(?))"
    if conn.execute(f"SELECT count(*) FROM outbox WHERE {in_the_batch}", (seqs,)).fetchone()[0] != len(batch):
        return False
    conn.execute(f"UPDATE outbox SET batch_id = ? WHERE {in_the_batch}", (batch.batch_id, seqs))
    _set_batch(conn, batch.batch_id, len(batch))
    return True


def _set_batch(conn: sqlite3.Connection, batch_id: str | None, records: int | None) -> None:
    conn.execute("UPDATE uplink_state SET batch_id = ?, batch_records = ? WHERE id = 1", (batch_id, records))


def release_batch(conn: sqlite3.Connection) -> None:
    """Forget the open batch (its records stay pending): the next batch is a new one,
    e.g. after the receiver refused the batch as too large or its key as reused."""
    _set_batch(conn, None, None)


@dataclass(frozen=True)
class BatchResult:
    acked: int
    quarantined: int
    unanswered: int  # records the receiver neither acked nor rejected: still pending


def close_batch(
    conn: sqlite3.Connection,
    batch: Batch,
    acked: list[str],
    rejected: list[tuple[str, str]],
    now: datetime,
) -> BatchResult:
    """Apply the receiver's answer to ``batch``: acked records leave the send queue, rejected ones
    (id, reason) go to quarantine, anything the answer did not mention stays pending. Ids that are
    not in the batch are ignored: an answer can only settle what was sent."""
    at = to_rfc3339(now)
    sent = set(batch.record_ids)
    acked_ids = [record_id for record_id in dict.fromkeys(acked) if record_id in sent]
    rejected_ids = {record_id: reason for record_id, reason in rejected if record_id in sent}
    for record_id in acked_ids:
        rejected_ids.pop(record_id, None)
    conn.execute(
        f"UPDATE outbox SET acked_at = ? WHERE {PENDING} AND record_id IN (SELECT value FROM json_each(?))",
        (at, json.dumps(acked_ids)),
    )
    quarantined = quarantine(conn, rejected_ids, now)
    _set_batch(conn, None, None)
    conn.execute("UPDATE uplink_state SET records_acked = records_acked + ? WHERE id = 1", (len(acked_ids),))
    return BatchResult(len(acked_ids), quarantined, len(sent) - len(acked_ids) - quarantined)


def quarantine(conn: sqlite3.Connection, reasons: dict[str, str], now: datetime) -> int:
    """Set records (id -> the receiver's reason) aside: they are not sent again until retried."""
    if not reasons:
        return 0
    at = to_rfc3339(now)
    cursor = conn.executemany(
        f"UPDATE outbox SET quarantined_at = ?, quarantine_reason = ? WHERE record_id = ? AND {PENDING}",
        [(at, reason[:500], record_id) for record_id, reason in reasons.items()],
    )
    return cursor.rowcount


def quarantined(conn: sqlite3.Connection, limit: int = 100) -> list[QuarantinedRecord]:
    """Quarantined records, oldest first: what they carry (kind, sheet) and why the receiver refused."""
    rows = conn.execute(
        "SELECT o.record_id, o.kind, o.created_at, o.quarantined_at, o.quarantine_reason,"
        " s.sheet_id, s.entry_id, s.judge_id FROM outbox o LEFT JOIN sheets s ON s.seq = o.sheet_seq"
        " WHERE o.quarantined_at IS NOT NULL ORDER BY o.seq LIMIT ?",
        (limit,),
    )
    return [QuarantinedRecord(**dict(row)) for row in rows]


def retry_quarantined(conn: sqlite3.Connection, record_ids: list[str] | None = None) -> int:
    """Put quarantined records (all, or the ones named) back in the send queue; returns how many."""
    if record_ids is None:
        cursor = conn.execute(
            "UPDATE outbox SET quarantined_at = NULL, quarantine_reason = NULL"
            " WHERE quarantined_at IS NOT NULL"
        )
    else:
        cursor = conn.execute(
            "UPDATE outbox SET quarantined_at = NULL, quarantine_reason = NULL"
            " WHERE quarantined_at IS NOT NULL AND record_id IN (SELECT value FROM json_each(?))",
            (json.dumps(record_ids),),
        )
    return cursor.rowcount


def prune_acked(conn: sqlite3.Connection, before: datetime, limit: int = 5000) -> int:
    """Delete up to ``limit`` records acked before ``before`` (the retention period is over);
    returns how many. Bounded, so one prune never holds the writer (and the tablets) for long."""
    return conn.execute(
        "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE acked_at IS NOT NULL AND acked_at < ?"
        " ORDER BY acked_at LIMIT ?)",
        (to_rfc3339(before), limit),
    ).rowcount


def has_pending(conn: sqlite3.Connection) -> bool:
    return conn.execute(f"SELECT 1 FROM outbox WHERE {PENDING} LIMIT 1").fetchone() is not None


def last_pending_seq(conn: sqlite3.Connection) -> int:
    """The newest pending record's place in the queue (its outbox seq); 0 when nothing is pending.
    What `venuebox uplink sync` waits to see delivered."""
    return conn.execute(f"SELECT coalesce(max(seq), 0) FROM outbox WHERE {PENDING}").fetchone()[0]


def delivery_up_to(conn: sqlite3.Connection, last_seq: int, since: str) -> tuple[int, int]:
    """Of the records queued up to ``last_seq``: how many still wait (pending), and how many the
    receiver refused (quarantined) at or after ``since`` (an RFC 3339 time)."""
    waiting = conn.execute(f"SELECT count(*) FROM outbox WHERE {PENDING} AND seq <= ?", (last_seq,))
    refused = conn.execute(
        "SELECT count(*) FROM outbox WHERE quarantined_at IS NOT NULL AND quarantined_at >= ? AND seq <= ?",
        (since, last_seq),
    )
    return waiting.fetchone()[0], refused.fetchone()[0]


def backlog(conn: sqlite3.Connection, now: datetime | None = None) -> OutboxBacklog:
    """What waits: pending records and the oldest one's time (and age, given ``now``; else None),
    quarantined records, and acked ones still kept for the retention period."""
    count = conn.execute(f"SELECT count(*) FROM outbox WHERE {PENDING}").fetchone()[0]
    first = conn.execute(f"SELECT created_at FROM outbox WHERE {PENDING} ORDER BY seq LIMIT 1").fetchone()
    oldest = first[0] if first else None
    quarantined = conn.execute("SELECT count(*) FROM outbox WHERE quarantined_at IS NOT NULL").fetchone()[0]
    acked = conn.execute("SELECT count(*) FROM outbox WHERE acked_at IS NOT NULL").fetchone()[0]
    return OutboxBacklog(
        records=count,
        oldest_created_at=oldest,
        quarantined=quarantined,
        acked_retained=acked,
        oldest_age_s=(
            None
            if now is None or oldest is None
            else round(max(0.0, (now - parse_rfc3339(oldest)).total_seconds()), 1)
        ),
    )
