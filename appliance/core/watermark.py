"""The ledger's safe watermark, which tablets use to decide what they may forget.

Every answer that stores or replays a sheet and every heartbeat answer carries
``{"epoch": ..., "safe_seq": N}`` (PROTOCOL.md, "Recovery and the safe watermark"):

* ``safe_seq``: every sheet with ``seq <= safe_seq`` is safe outside this box's live database:
  inside a snapshot that verified, or acknowledged by the cloud. A tablet keeps each sheet the box
  stored until its ``seq`` is at or below it, so a box whose storage dies can take back from the
  tablets what neither a snapshot nor the cloud holds.
* ``epoch``: names this ledger's history. It changes when a box is rebuilt from its backups
  (``new_epoch``), which may have lost sheets stored after its snapshot: a tablet that sees a new
  epoch sends again every sheet it keeps (200 for those the box has, 201 for those it lost).
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any


def new_epoch(conn: sqlite3.Connection) -> str:
    """Give the box a new ledger epoch (inside the writer's transaction); returns it."""
    epoch = secrets.token_hex(8)
    conn.execute("UPDATE box SET ledger_epoch = ? WHERE id = 1", (epoch,))
    return epoch


def snapshot_safe_seq(conn: sqlite3.Connection) -> int:
    """The ledger's length in the newest snapshot that verified (sheets are numbered 1, 2, ... in
    ledger order, so a snapshot holding N rows holds every seq up to N)."""
    row = conn.execute("SELECT max(ledger_rows) FROM snapshots WHERE verify_ok = 1").fetchone()
    return int(row[0] or 0)


def cloud_safe_seq(conn: sqlite3.Connection) -> int:
    """The highest seq up to which the cloud acknowledged every sheet: one below the first sheet
    record still waiting (pending, or quarantined by the receiver), else the ledger's head."""
    waiting = [
        conn.execute(
            "SELECT sheet_seq FROM outbox WHERE acked_at IS NULL AND quarantined_at IS NULL"
            " AND sheet_seq IS NOT NULL ORDER BY seq LIMIT 1"
        ).fetchone(),
        conn.execute(
            "SELECT min(sheet_seq) FROM outbox WHERE quarantined_at IS NOT NULL AND acked_at IS NULL"
        ).fetchone(),
    ]
    firsts = [row[0] for row in waiting if row is not None and row[0] is not None]
    if firsts:
        return min(firsts) - 1
    head = conn.execute("SELECT max(seq) FROM sheets").fetchone()[0]
    return int(head or 0)


def ledger_mark(conn: sqlite3.Connection) -> dict[str, Any]:
    """``{"epoch", "safe_seq"}`` as answers carry it (short indexed reads)."""
    epoch = conn.execute("SELECT ledger_epoch FROM box WHERE id = 1").fetchone()
    return {
        "epoch": (epoch[0] if epoch is not None else None) or "",
        "safe_seq": max(snapshot_safe_seq(conn), cloud_safe_seq(conn)),
    }
