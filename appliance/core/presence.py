"""Heartbeats and tablet presence (online / stale / offline)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from appliance.core.devices import Device, ensure_active
from appliance.core.schedule import current_version
from appliance.shared.status import Presence
from appliance.shared.times import parse_rfc3339, to_rfc3339, utcnow


def record_heartbeat(
    conn: sqlite3.Connection,
    device: Device,
    sent_at: str,
    battery: int | None,
    app_version: str | None,
    queue_depth: int | None,
    address: str | None,
    history_per_device: int,
) -> dict[str, Any]:
    """Store the latest state of the tablet and one bounded history row; returns the box's state.

    Heartbeats are not competition writes: they keep working while the box is frozen, and the
    answer is how a tablet learns about a freeze, and about a new schedule version (``event_version``)."""
    ensure_active(conn, device)
    now = utcnow()
    skew = (parse_rfc3339(sent_at) - now).total_seconds()
    received_at = to_rfc3339(now)
    conn.execute(
        """
        INSERT INTO presence (device_id, last_seen_at, sent_at, clock_skew_s, battery, app_version,
                              queue_depth, address)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (device_id) DO UPDATE SET
            last_seen_at = excluded.last_seen_at, sent_at = excluded.sent_at,
            clock_skew_s = excluded.clock_skew_s, battery = excluded.battery,
            app_version = excluded.app_version, queue_depth = excluded.queue_depth,
            address = excluded.address
        """,
        (device.device_id, received_at, sent_at, skew, battery, app_version, queue_depth, address),
    )
    conn.execute(
        "INSERT INTO heartbeats (device_id, received_at, sent_at, battery, app_version, queue_depth)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (device.device_id, received_at, sent_at, battery, app_version, queue_depth),
    )
    _trim_history(conn, device.device_id, history_per_device)
    box = conn.execute("SELECT frozen, freeze_reason FROM box WHERE id = 1").fetchone()
    return {
        "server_time": received_at,
        "frozen": bool(box[0]),
        "freeze_reason": box[1],
        "event_version": current_version(conn),
    }


def _trim_history(conn: sqlite3.Connection, device_id: str, keep: int) -> None:
    """Bounded history: keep the newest ``keep`` rows of this device."""
    conn.execute(
        """
        DELETE FROM heartbeats WHERE device_id = ? AND id < (
            SELECT id FROM heartbeats WHERE device_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)
        """,
        (device_id, device_id, max(keep - 1, 0)),
    )


def presence_state(last_seen_at: str | None, now: datetime, online_s: float, stale_s: float) -> Presence:
    """'online' under ``online_s`` since the last heartbeat, 'stale' under ``stale_s``, else 'offline'."""
    if last_seen_at is None:
        return "offline"
    age = (now - parse_rfc3339(last_seen_at)).total_seconds()
    if age < online_s:
        return "online"
    if age < stale_s:
        return "stale"
    return "offline"
