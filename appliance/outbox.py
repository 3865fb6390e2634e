"""The outbox: records waiting for the uplink, written in the same transaction as what they carry."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from appliance.canonical import canonical_json
from appliance.times import now_rfc3339


def enqueue(conn: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> str:
    record_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO outbox (record_id, kind, created_at, payload) VALUES (?, ?, ?, ?)",
        (record_id, kind, now_rfc3339(), canonical_json(payload)),
    )
    return record_id


def backlog(conn: sqlite3.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
    return {"records": row[0], "oldest_created_at": row[1]}
