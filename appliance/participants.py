"""Participants' names: personal data, AES-256-GCM at rest (``appliance/personal.py``), never in a
tablet's view, masked in the tech's views, and shown in full only on a reveal that states a reason
and leaves one access record in the audit log (who, whose, which field, when, request id, why)."""

from __future__ import annotations

import sqlite3

from appliance import audit, personal
from appliance.errors import InvalidInput, NotFound
from appliance.event import current_event_id

FIELD = "participants"


def _stored(conn: sqlite3.Connection, entry_id: str) -> tuple[str, str | None]:
    event_id = current_event_id(conn)
    row = conn.execute(
        "SELECT participants_enc FROM entries WHERE event_id = ? AND entry_id = ?", (event_id, entry_id)
    ).fetchone()
    if event_id is None or row is None:
        raise NotFound(f"no entry {entry_id!r} in the current event")
    return event_id, row[0]


def _names(key: bytes, event_id: str, entry_id: str, sealed: str | None) -> list[str]:
    if not sealed:
        return []
    text = personal.decrypt(key, "entries", FIELD, f"{event_id}/{entry_id}", sealed)
    return [name.strip() for name in text.split(";") if name.strip()]


def masked(conn: sqlite3.Connection, key: bytes, entry_id: str) -> list[str]:
    """The entry's participants as initials ("N. R."): enough to tell entries apart, not to identify."""
    event_id, sealed = _stored(conn, entry_id)
    return [personal.mask(name) for name in _names(key, event_id, entry_id, sealed)]


def reveal(
    conn: sqlite3.Connection,
    key: bytes,
    entry_id: str,
    actor: str,
    reason: str,
    request_id: str | None = None,
) -> list[str]:
    """The entry's participants in full, in the writer's transaction with exactly one access record.
    The record names the entry and the field, never the names themselves."""
    reason = reason.strip()
    if len(reason) < 3:
        raise InvalidInput(
            "say why you need the names (e.g. 'parent asking at the desk, entry 142')",
            [{"field": "reason", "message": "a reason of at least 3 characters is required"}],
        )
    event_id, sealed = _stored(conn, entry_id)
    names = _names(key, event_id, entry_id, sealed)
    audit.record(
        conn,
        actor,
        "personal.reveal",
        {"entry_id": entry_id, "field": FIELD, "reason": reason[:500], "count": len(names)},
        request_id,
    )
    return names
