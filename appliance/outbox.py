"""The outbox: records waiting for the uplink, written in the same transaction as what they carry,
and their delivery: batches, acks, quarantine, retention.

A sheet's record holds no copy of the sheet: it points at its ledger row (``sheet_seq``), which is
append-only, and the payload is built from that row when the record is read for sending. Other
kinds (audit and so on) carry their payload as canonical JSON.

Delivery, as the uplink worker drives it (every function here runs inside one transaction):

* A record is **pending** until the receiver acks it (``acked_at``; kept for the retention period,
  then pruned) or rejects it as invalid (``quarantined_at`` with the receiver's reason; it waits for
  a tech's ``venuebox uplink retry`` while the rest of the queue keeps flowing).
* ``open_batch`` gives the batch to send: the one already open (same id, same records, so the same
  body on every retry and after a restart), else the oldest pending records, bounded by count and
  bytes, under a new id. ``close_batch`` applies the receiver's answer.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from appliance.canonical import canonical_json
from appliance.times import now_rfc3339, parse_rfc3339, to_rfc3339

PENDING = "acked_at IS NULL AND quarantined_at IS NULL"
_O_PENDING = "o.acked_at IS NULL AND o.quarantined_at IS NULL"
_encode = msgspec.json.Encoder().encode


def enqueue(conn: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> str:
    """Queue one record with its own payload, inside the caller's transaction; returns its id."""
    record_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO outbox (record_id, kind, created_at, payload) VALUES (?, ?, ?, ?)",
        (record_id, kind, now_rfc3339(), canonical_json(payload)),
    )
    return record_id


def enqueue_sheets(conn: sqlite3.Connection, sheet_seqs: list[int]) -> None:
    """Queue one 'sheet' record per stored ledger row, in ledger order."""
    created_at = now_rfc3339()
    conn.executemany(
        "INSERT INTO outbox (record_id, kind, created_at, sheet_seq) VALUES (?, 'sheet', ?, ?)",
        [(str(uuid.uuid4()), created_at, seq) for seq in sheet_seqs],
    )


def _records(conn: sqlite3.Connection, where: str, params: tuple[Any, ...], limit: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT o.seq AS outbox_seq, o.record_id, o.kind, o.created_at, o.payload, s.* FROM outbox o"
        f" LEFT JOIN sheets s ON s.seq = o.sheet_seq WHERE {where} ORDER BY o.seq LIMIT ?",
        (*params, limit),
    ).fetchall()


def _travelling(row: sqlite3.Row) -> dict[str, Any]:
    from appliance.ledger import sheet_record

    payload = sheet_record(row) if row["kind"] == "sheet" else json.loads(row["payload"])
    return {"id": row["record_id"], "kind": row["kind"], "created_at": row["created_at"], "payload": payload}


def pending(conn: sqlite3.Connection, limit: int = 500) -> list[dict[str, Any]]:
    """The oldest records not yet acknowledged (nor quarantined), in order, as they travel:
    ``{"id", "kind", "created_at", "payload"}``."""
    return [_travelling(row) for row in _records(conn, _O_PENDING, (), limit)]


# -- batches --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One request's worth of records: ``body`` is the exact JSON sent, the same on every retry."""

    batch_id: str
    record_ids: list[str]
    body: bytes

    def __len__(self) -> int:
        return len(self.record_ids)


def _body(parts: list[bytes]) -> bytes:
    return b'{"records":[' + b",".join(parts) + b"]}"


def open_batch(conn: sqlite3.Connection, max_records: int, max_bytes: int) -> Batch | None:
    """The batch to send now (in the writer's transaction): the open one if it still has pending
    records, else a new one of the oldest pending records, at most ``max_records`` and
    ``max_bytes`` of body (always at least one record, so an oversized one is sent alone and the
    receiver's answer decides). None when nothing is pending."""
    state = conn.execute("SELECT batch_id FROM uplink_state WHERE id = 1").fetchone()
    if state is not None and state["batch_id"]:
        rows = _records(conn, f"o.batch_id = ? AND {_O_PENDING}", (state[0],), 1 << 30)
        if rows:
            records = [_encode(_travelling(row)) for row in rows]
            return Batch(state[0], [row["record_id"] for row in rows], _body(records))
    rows = _records(conn, _O_PENDING, (), max_records)
    if not rows:
        _set_batch(conn, None, None)
        return None
    parts: list[bytes] = []
    size = len(_body([]))
    for row in rows:
        part = _encode(_travelling(row))
        if parts and size + len(part) + 1 > max_bytes:
            break
        parts.append(part)
        size += len(part) + 1
    taken = rows[: len(parts)]
    batch_id = str(uuid.uuid4())
    # The batch is the oldest pending records, so "pending up to the last one taken" names it.
    conn.execute(
        f"UPDATE outbox SET batch_id = ? WHERE {PENDING} AND seq <= ?", (batch_id, taken[-1]["outbox_seq"])
    )
    _set_batch(conn, batch_id, len(taken))
    return Batch(batch_id, [row["record_id"] for row in taken], _body(parts))


def _set_batch(conn: sqlite3.Connection, batch_id: str | None, records: int | None) -> None:
    conn.execute("UPDATE uplink_state SET batch_id = ?, batch_records = ? WHERE id = 1", (batch_id, records))


def release_batch(conn: sqlite3.Connection) -> None:
    """Forget the open batch (its records stay pending): the next ``open_batch`` makes a new one,
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


def quarantined(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Quarantined records, oldest first: what they carry (kind, sheet) and why the receiver refused."""
    rows = conn.execute(
        "SELECT o.record_id, o.kind, o.created_at, o.quarantined_at, o.quarantine_reason,"
        " s.sheet_id, s.entry_id, s.judge_id FROM outbox o LEFT JOIN sheets s ON s.seq = o.sheet_seq"
        " WHERE o.quarantined_at IS NOT NULL ORDER BY o.seq LIMIT ?",
        (limit,),
    )
    return [dict(row) for row in rows]


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


def backlog(conn: sqlite3.Connection, now: datetime | None = None) -> dict[str, Any]:
    """What waits: pending records and the oldest one's time (and age, given ``now``), quarantined
    records, and acked ones still kept for the retention period."""
    count = conn.execute(f"SELECT count(*) FROM outbox WHERE {PENDING}").fetchone()[0]
    first = conn.execute(f"SELECT created_at FROM outbox WHERE {PENDING} ORDER BY seq LIMIT 1").fetchone()
    oldest = first[0] if first else None
    view: dict[str, Any] = {
        "records": count,
        "oldest_created_at": oldest,
        "quarantined": conn.execute(
            "SELECT count(*) FROM outbox WHERE quarantined_at IS NOT NULL"
        ).fetchone()[0],
        "acked_retained": conn.execute("SELECT count(*) FROM outbox WHERE acked_at IS NOT NULL").fetchone()[
            0
        ],
    }
    if now is not None:
        view["oldest_age_s"] = (
            None if oldest is None else round(max(0.0, (now - parse_rfc3339(oldest)).total_seconds()), 1)
        )
    return view
