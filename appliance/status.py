"""A snapshot of the box's state, for `venuebox status`, the admin API and (later) the console."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

from appliance import __version__, outbox
from appliance.box import get_box
from appliance.chain import head
from appliance.config import Config
from appliance.event import event_summary
from appliance.presence import presence_state
from appliance.times import to_rfc3339, utcnow


def snapshot(conn: sqlite3.Connection, config: Config) -> dict[str, Any]:
    box = get_box(conn)
    now = utcnow()
    tablets = {"online": 0, "stale": 0, "offline": 0}
    for row in conn.execute(
        "SELECT p.last_seen_at FROM devices d LEFT JOIN presence p ON p.device_id = d.device_id"
        " WHERE d.revoked_at IS NULL"
    ):
        tablets[presence_state(row[0], now, config.presence_online_s, config.presence_stale_s)] += 1
    five_min_ago = to_rfc3339(now - timedelta(minutes=5))
    ledger_rows, ledger_head = head(conn, "sheets")
    audit_rows, audit_head = head(conn, "audit_log")
    return {
        "box": {"id": box["box_id"], "name": box["name"], "version": __version__},
        "event": event_summary(conn),
        "freeze": {
            "frozen": bool(box["frozen"]),
            "reason": box["freeze_reason"],
            "since": box["frozen_at"],
            "by": box["frozen_by"],
        },
        "tablets": tablets,
        "sheets": {
            "total": ledger_rows,
            "last_5_min": conn.execute(
                "SELECT count(*) FROM sheets WHERE received_at >= ?", (five_min_ago,)
            ).fetchone()[0],
            "head_hash": ledger_head,
        },
        "audit": {"rows": audit_rows, "head_hash": audit_head},
        "outbox": outbox.backlog(conn),
    }
