"""Alerts for the venue tech: one row per condition, raised and cleared by the watchdog.

A condition is named by its *fingerprint* (``tablet-offline:<device_id>``, ``disk-free``, ...). While
it stays true, each check only refreshes ``last_seen`` (and the detail); when it ends the alert
clears itself; when it comes back the same row re-activates and ``count`` goes up, so a flapping
tablet is one line with "7 times since 09:12", not seven lines.

Every function runs inside the writer's transaction (``store.write(lambda conn: ...)``). The audit
log gets a row when a critical alert becomes active and when an alert clears: transitions only,
never a check that merely finds the same condition again.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from appliance.core import audit
from appliance.shared.errors import NotFound
from appliance.shared.status import SEVERITIES, Alert, AlertCounts
from appliance.shared.times import to_rfc3339, utcnow

_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
AUDIT_ACTOR = "watchdog"


def _at(at: datetime | None) -> str:
    return to_rfc3339(at if at is not None else utcnow())


def _alert(row: sqlite3.Row) -> Alert:
    """An alerts row as the ``Alert`` every surface shows (its columns are the struct's fields)."""
    return Alert(**{**dict(row), "active": bool(row["active"])})


def get_alert(conn: sqlite3.Connection, fingerprint: str) -> Alert | None:
    """The alert for ``fingerprint`` (active or cleared), or None if it never happened."""
    row = conn.execute("SELECT * FROM alerts WHERE fingerprint = ?", (fingerprint,)).fetchone()
    return None if row is None else _alert(row)


def raise_alert(
    conn: sqlite3.Connection,
    fingerprint: str,
    severity: str,
    title: str,
    detail: str,
    at: datetime | None = None,
) -> Alert:
    """Record that the condition ``fingerprint`` holds (at ``at``, default now); returns the row.

    New condition: a row with count 1. Still active: last_seen, title, detail and severity are
    refreshed, count stays. Cleared before: the row re-activates with count + 1, first_seen kept.
    A new occurrence, or an escalation to a higher severity, drops an earlier acknowledgement: the
    tech has not seen *this* one yet."""
    if severity not in _RANK:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    if not fingerprint:
        raise ValueError("an alert needs a fingerprint naming its condition")
    when = _at(at)
    before = get_alert(conn, fingerprint)
    if before is None:
        conn.execute(
            "INSERT INTO alerts (fingerprint, severity, title, detail, first_seen, last_seen, count, active)"
            " VALUES (?, ?, ?, ?, ?, ?, 1, 1)",
            (fingerprint, severity, title, detail, when, when),
        )
    elif before.active:
        escalated = _RANK[severity] > _RANK[before.severity]
        conn.execute(
            "UPDATE alerts SET severity = ?, title = ?, detail = ?, last_seen = ?"
            + (", acknowledged_at = NULL, acknowledged_by = NULL" if escalated else "")
            + " WHERE fingerprint = ?",
            (severity, title, detail, when, fingerprint),
        )
    else:
        conn.execute(
            "UPDATE alerts SET severity = ?, title = ?, detail = ?, last_seen = ?, count = count + 1,"
            " active = 1, cleared_at = NULL, acknowledged_at = NULL, acknowledged_by = NULL"
            " WHERE fingerprint = ?",
            (severity, title, detail, when, fingerprint),
        )
    alert = get_alert(conn, fingerprint)
    assert alert is not None
    became_critical = severity == "critical" and (
        before is None or not before.active or before.severity != "critical"
    )
    if became_critical:
        audit.record(conn, AUDIT_ACTOR, "alert.raise", _audit_detail(alert))
    return alert


def clear_alert(conn: sqlite3.Connection, fingerprint: str, at: datetime | None = None) -> bool:
    """The condition ended: deactivate its alert. Returns whether it was active (False is a no-op)."""
    cursor = conn.execute(
        "UPDATE alerts SET active = 0, cleared_at = ? WHERE fingerprint = ? AND active = 1",
        (_at(at), fingerprint),
    )
    if cursor.rowcount == 0:
        return False
    alert = get_alert(conn, fingerprint)
    assert alert is not None
    audit.record(conn, AUDIT_ACTOR, "alert.clear", _audit_detail(alert))
    return True


def acknowledge(conn: sqlite3.Connection, fingerprint: str, actor: str, at: datetime | None = None) -> Alert:
    """A tech has seen the alert; it stays listed (and active) until its condition ends.

    Acknowledging again keeps the first acknowledgement; NotFound for an unknown fingerprint."""
    alert = get_alert(conn, fingerprint)
    if alert is None:
        raise NotFound(f"no alert {fingerprint!r}: the alert list shows the current ones")
    if alert.acknowledged_at is not None:
        return alert
    conn.execute(
        "UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ? WHERE fingerprint = ?",
        (_at(at), actor, fingerprint),
    )
    audit.record(conn, actor, "alert.acknowledge", {"fingerprint": fingerprint})
    acknowledged = get_alert(conn, fingerprint)
    assert acknowledged is not None
    return acknowledged


def list_alerts(conn: sqlite3.Connection, include_cleared: bool = False) -> list[Alert]:
    """Alerts, most severe first, then the most recently seen first; active ones only by default."""
    rank = "CASE severity " + " ".join(f"WHEN '{s}' THEN {r}" for s, r in _RANK.items()) + " END"
    where = "" if include_cleared else " WHERE active = 1"
    rows = conn.execute(f"SELECT * FROM alerts{where} ORDER BY {rank} DESC, last_seen DESC, fingerprint")
    return [_alert(row) for row in rows]


def active_counts(conn: sqlite3.Connection) -> AlertCounts:
    """Active alerts by severity, every severity present (for a status line or a metric)."""
    counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    for severity, count in conn.execute("SELECT severity, count(*) FROM alerts WHERE active = 1 GROUP BY 1"):
        counts[severity] = count
    return AlertCounts(**counts)


def _audit_detail(alert: Alert) -> dict[str, Any]:
    # No title or detail: they may name a judge, and the audit log holds no personal data.
    return {
        "fingerprint": alert.fingerprint,
        "severity": alert.severity,
        "count": alert.count,
        "first_seen": alert.first_seen,
    }
