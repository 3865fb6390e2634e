"""The outbox: records waiting for the uplink, written in the same transaction as what they carry.

A sheet's record holds no copy of the sheet: it points at its ledger row (``sheet_seq``), which is
append-only, and the payload is built from that row when the record is read for sending. Other
kinds (audit and so on) carry their payload as canonical JSON.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

from appliance.canonical import canonical_json
from appliance.times import now_rfc3339


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


def pending(conn: sqlite3.Connection, limit: int = 500) -> list[dict[str, Any]]:
    """The oldest records not yet acknowledged, in order, as they travel:
    ``{"id", "kind", "created_at", "payload"}``."""
    from appliance.ledger import sheet_record

    records = []
    rows = conn.execute(
        "SELECT o.record_id, o.kind, o.created_at, o.payload, s.* FROM outbox o"
        " LEFT JOIN sheets s ON s.seq = o.sheet_seq ORDER BY o.seq LIMIT ?",
        (limit,),
    )
    for row in rows:
        payload = sheet_record(row) if row["kind"] == "sheet" else json.loads(row["payload"])
        records.append(
            {"id": row["record_id"], "kind": row["kind"], "created_at": row["created_at"], "payload": payload}
        )
    return records


def backlog(conn: sqlite3.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
    return {"records": row[0], "oldest_created_at": row[1]}
