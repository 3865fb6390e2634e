"""Reading the imported event: what a judge's tablet downloads."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from appliance.core import data_key, personal_fields
from appliance.core.box import current_event_id
from appliance.core.devices import Device, ensure_active
from appliance.core.ledger import sheets_for_judge
from appliance.core.schedule import current_version
from appliance.core.sessions import write_barriers
from appliance.shared.errors import NoEvent
from appliance.shared.status import EventSummary


def judge_event(
    conn: sqlite3.Connection, device: Device, data_key_path: Path | None = None
) -> dict[str, Any]:
    """Event meta, criteria, all sessions (flagged on/off the judge's panel, with this judge's
    sign-off time and the tech's lock), the entries of the judge's sessions in running order (the
    scratched ones marked), the schedule version, and the judge's current sheets. No personal data, except
    each entry's ``participants`` (decrypted with the key at ``data_key_path``) when the event sets
    ``tablets_see_participants``; the other personal columns never. Re-checks the device in the
    same read, so a revoke answers 401 here at once too."""
    ensure_active(conn, device)
    event_id, judge_id = device.event_id, device.judge_id
    event = conn.execute(
        "SELECT event_id, name, timezone, snapshot_id FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()
    if event is None:
        raise NoEvent(f"event {event_id!r} is no longer on this box")
    judge = conn.execute(
        "SELECT judge_id, name FROM judges WHERE event_id = ? AND judge_id = ?", (event_id, judge_id)
    ).fetchone()
    panel = {
        r[0]
        for r in conn.execute(
            "SELECT session_id FROM panels WHERE event_id = ? AND judge_id = ?", (event_id, judge_id)
        )
    }
    criteria = [
        {"key": r["key"], "label": r["label"], "min": r["min"], "max": r["max"], "step": r["step"]}
        for r in conn.execute("SELECT * FROM criteria WHERE event_id = ? ORDER BY position", (event_id,))
    ]
    # This judge's sign-offs and the tech's locks: the app shows those sessions read-only.
    signed_off = dict(
        conn.execute(
            "SELECT session_id, signed_off_at FROM sign_offs WHERE event_id = ? AND judge_id = ?",
            (event_id, judge_id),
        ).fetchall()
    )
    locked, _ = write_barriers(conn, event_id)
    key = None
    if data_key_path is not None and personal_fields.tablets_see_participants(conn, event_id):
        key = data_key.key_for(conn, data_key_path)
    sessions = []
    for s in conn.execute("SELECT * FROM sessions WHERE event_id = ? ORDER BY position", (event_id,)):
        on_panel = s["session_id"] in panel
        entries = []
        if on_panel:
            entries = [
                {
                    "entry_id": e["entry_id"],
                    "order": e["running_order"],
                    "scheduled_at": e["scheduled_at"],
                    "title": e["title"],
                    "category": e["category"],
                    "division": e["division"],
                    "level": e["level"],
                    "studio": e["studio"],
                    # Scratched on the day (appliance/core/schedule.py): listed, not removed, so a
                    # judge's sheets for it still have their entry.
                    "scratched": bool(e["scratched"]),
                    **(_participants(key, event_id, e) if key is not None else {}),
                }
                for e in conn.execute(
                    "SELECT * FROM entries WHERE event_id = ? AND session_id = ? ORDER BY running_order",
                    (event_id, s["session_id"]),
                )
            ]
        sessions.append(
            {
                "id": s["session_id"],
                "name": s["name"],
                "stage": s["stage"],
                "starts_at": s["starts_at"],
                "on_panel": on_panel,
                "entries": entries,
                "signed_off_at": signed_off.get(s["session_id"]),
                "locked": s["session_id"] in locked,
            }
        )
    return {
        "event": {
            "id": event["event_id"],
            "name": event["name"],
            "timezone": event["timezone"],
            "snapshot_id": event["snapshot_id"],
        },
        # The schedule version (1: as imported; each publish or rollback the next): it is in the
        # body, so the ETag changes with every publish.
        "event_version": current_version(conn) or 1,
        "judge": {"id": judge_id, "name": judge["name"] if judge else judge_id},
        "criteria": criteria,
        "sessions": sessions,
        "sheets": sheets_for_judge(conn, event_id, judge_id),
    }


def _participants(key: bytes, event_id: str, entry: sqlite3.Row) -> dict[str, list[str]]:
    names = personal_fields.participant_names(key, event_id, entry["entry_id"], entry["participants_enc"])
    return {"participants": names}


def event_summary(conn: sqlite3.Connection) -> EventSummary | None:
    """The current event and how many sessions, entries, judges and criteria it holds (None before
    the first import)."""
    event_id = current_event_id(conn)
    if event_id is None:
        return None
    row = conn.execute(
        "SELECT event_id, name, timezone, snapshot_id, imported_at, extra FROM events WHERE event_id = ?",
        (event_id,),
    ).fetchone()
    counts = {
        table: conn.execute(f"SELECT count(*) FROM {table} WHERE event_id = ?", (event_id,)).fetchone()[0]
        for table in ("sessions", "entries", "judges", "criteria")
    }
    return EventSummary(
        id=row["event_id"],
        name=row["name"],
        timezone=row["timezone"],
        snapshot_id=row["snapshot_id"],
        imported_at=row["imported_at"],
        extra=json.loads(row["extra"]),
        **counts,
    )
