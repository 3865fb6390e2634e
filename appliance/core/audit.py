"""The audit log: who did what to the box, when, and why. Append-only and hash-chained."""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.core import chain, outbox
from appliance.shared.admin_wire import AuditRow
from appliance.shared.canonical import canonical_json
from appliance.shared.times import now_rfc3339


def record(
    conn: sqlite3.Connection,
    actor: str,
    action: str,
    detail: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Append one audit row inside the caller's (writer) transaction; returns the stored row.

    ``detail`` must never hold secrets or personal data: it is shown in the console, exported and
    sent to the cloud (an ``audit`` outbox record, queued in the same transaction)."""
    row = chain.append(
        conn,
        "audit_log",
        {
            "at": now_rfc3339(),
            "actor": actor,
            "action": action,
            "detail": canonical_json(detail or {}),
            "request_id": request_id,
        },
    )
    outbox.enqueue(conn, "audit", {**row, "detail": detail or {}})
    return row


def tail(conn: sqlite3.Connection, limit: int = 50, action: str | None = None) -> list[AuditRow]:
    """The newest ``limit`` rows of the audit log, newest first (only ``action``'s, given one)."""
    sql = "SELECT seq, at, actor, action, detail, request_id, hash FROM audit_log"
    params: list[Any] = []
    if action:
        sql += " WHERE action = ?"
        params.append(action)
    sql += " ORDER BY seq DESC LIMIT ?"
    params.append(limit)
    return [AuditRow(**dict(row)) for row in conn.execute(sql, params)]
