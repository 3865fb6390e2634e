"""The outbox: records waiting for the uplink, written in the same transaction as what they carry."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from appliance.canonical import canonical_json
from appliance.times import now_rfc3339


def enqueue(conn: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> str:
    return enqueue_many(conn, kind, [payload])[0]


def enqueue_many(conn: sqlite3.Connection, kind: str, payloads: list[dict[str, Any]]) -> list[str]:
    """Queue records for the uplink, in order, inside the caller's transaction; returns their ids."""
    created_at = now_rfc3339()
    rows = [(str(uuid.uuid4()), kind, created_at, canonical_json(payload)) for payload in payloads]
    conn.executemany("INSERT INTO outbox (record_id, kind, created_at, payload) VALUES (?, ?, ?, ?)", rows)
    return [row[0] for row in rows]


def backlog(conn: sqlite3.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
    return {"records": row[0], "oldest_created_at": row[1]}
