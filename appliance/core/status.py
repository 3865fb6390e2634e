"""Snapshots of the box's state: ``snapshot`` for `venuebox status` and the systemd status line (the
uplink's state included); ``gauges``, the part of it the metrics read at each scrape;
``console_snapshot`` (that plus alerts, the current session's progress, disk and backups) for the
admin API's status, which the venue console polls."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from appliance import __version__
from appliance.core import alerts, outbox, progress
from appliance.core.backup import backup_view
from appliance.core.box import get_box
from appliance.core.chain import head
from appliance.core.config import Config
from appliance.core.devices import list_devices
from appliance.core.event import event_summary
from appliance.core.presence import presence_state
from appliance.core.recovery import recovery_view
from appliance.core.storage import Store
from appliance.core.uplink_state import uplink_view
from appliance.shared.times import parse_rfc3339, to_rfc3339, utcnow

MB = 1024 * 1024
TOP_ALERTS = 5


def tablet_counts(conn: sqlite3.Connection, config: Config, now: datetime) -> dict[str, int]:
    """Paired (not revoked) tablets by presence state: online, stale, offline."""
    tablets = {"online": 0, "stale": 0, "offline": 0}
    for row in conn.execute(
        "SELECT p.last_seen_at FROM devices d LEFT JOIN presence p ON p.device_id = d.device_id"
        " WHERE d.revoked_at IS NULL"
    ):
        tablets[presence_state(row[0], now, config.presence_online_s, config.presence_stale_s)] += 1
    return tablets


def snapshot(conn: sqlite3.Connection, config: Config, now: datetime | None = None) -> dict[str, Any]:
    box = get_box(conn)
    now = now or utcnow()
    tablets = tablet_counts(conn, config, now)
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
            "category": box["freeze_category"],
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
        "outbox": outbox.backlog(conn, now),
        "uplink": uplink_view(conn, config, now),
        "recovery": recovery_view(conn),
    }


def gauges(conn: sqlite3.Connection, config: Config, now: datetime | None = None) -> dict[str, Any]:
    """The part of ``snapshot`` the /metrics state gauges read (tablets, freeze, sheets, outbox,
    uplink), cheap enough for every scrape: a few indexed reads (no event summary, hashes or recovery)."""
    box = get_box(conn)
    now = now or utcnow()
    tablets = tablet_counts(conn, config, now)
    uplink = uplink_view(conn, config, now)
    return {
        "freeze": {"frozen": bool(box["frozen"])},
        "tablets": tablets,
        "sheets": {"total": head(conn, "sheets")[0]},
        "outbox": {"records": uplink["backlog"]},
        "uplink": uplink,
    }


def console_snapshot(
    conn: sqlite3.Connection, config: Config, tablet_urls: list[str], now: datetime | None = None
) -> dict[str, Any]:
    """``snapshot`` plus what the console's status screen shows: the box's clock (the console says
    "12 s ago" against it), the URLs tablets open, active alerts (counts and the five most severe),
    the current session's progress, the data disk, backup and uplink."""
    now = now or utcnow()
    snap = snapshot(conn, config, now)
    snap["server_time"] = to_rfc3339(now)
    snap["box"]["tablet_urls"] = list(tablet_urls)
    snap["alerts_active"] = alerts.active_counts(conn)
    snap["alerts_top"] = alerts.list_alerts(conn)[:TOP_ALERTS]
    snap["session"] = progress.current_session_progress(conn, now)
    snap["disk"] = disk(config)
    snap["backup"] = backup_view(conn, config, now)
    return snap


def database_view(store: Store) -> dict[str, Any]:
    """Whether this process found the database file damaged (``Store.damaged``): ``state`` "ok" or
    "damaged", with SQLite's first problems and the line a tech reads (the runbook's first steps)."""
    damage = store.damaged
    return {
        "path": str(store.path),
        "state": "ok" if damage is None else "damaged",
        "problems": [] if damage is None else damage.problems[:5],
        "detail": None if damage is None else damage.detail,
    }


def disk(config: Config) -> dict[str, Any]:
    """The data dir's filesystem: free and total MB, and how full it is."""
    usage = shutil.disk_usage(config.data_dir)
    return {
        "path": str(config.data_dir),
        "free_mb": round(usage.free / MB, 1),
        "total_mb": round(usage.total / MB, 1),
        "used_pct": round(100 * usage.used / usage.total, 1) if usage.total else 0.0,
    }


def devices_with_presence(
    conn: sqlite3.Connection, config: Config, include_revoked: bool = True, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Paired devices (``devices.list_devices``) with "presence" (online, stale, offline, or revoked)
    and "last_seen_age_s" (seconds since the last heartbeat, None before the first)."""
    now = now or utcnow()
    found = []
    for device in list_devices(conn):
        revoked = device["revoked_at"] is not None
        if revoked and not include_revoked:
            continue
        seen = device["last_seen_at"]
        device["presence"] = (
            "revoked"
            if revoked
            else presence_state(seen, now, config.presence_online_s, config.presence_stale_s)
        )
        device["last_seen_age_s"] = (
            None if seen is None else round((now - parse_rfc3339(seen)).total_seconds(), 3)
        )
        found.append(device)
    return found
