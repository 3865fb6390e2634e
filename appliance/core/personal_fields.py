"""An entry's personal fields: its participants' names, and the entries.csv columns the event package
marks personal (event.json ``personal_columns``, e.g. a guardian's phone or a date of birth).

Each is sealed on its own with AES-256-GCM (``appliance/core/personal.py``; the associated data is table
``entries``, the column, and ``event_id/entry_id``): participants in ``entries.participants_enc``, the
other columns in ``entries.personal_enc`` as ``{column: ciphertext}``. They never reach plain export
files, never reach a tablet (participants only when the event sets ``tablets_see_participants``),
are masked in the tech's views (names to initials, other values to their first character and a
fixed ``•••``), and are shown in full only on a reveal that states a reason and leaves exactly one
``personal.reveal`` audit record: who, whose entry, which field, why, the request id; never the value.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from appliance.core import audit, personal
from appliance.core.box import get_box
from appliance.core.event_package.format import PARTICIPANTS, PERSONAL_COLUMNS, TABLETS_SEE_PARTICIPANTS
from appliance.shared.errors import InvalidInput, NotFound

# A revealed or masked field: participants as a list of names, any other column as text, None when
# the entry has no value for it.
Value = list[str] | str | None


def event_options(conn: sqlite3.Connection, event_id: str | None) -> dict[str, Any]:
    """The event's settings from its package (event.json keys beyond the required ones)."""
    row = conn.execute("SELECT extra FROM events WHERE event_id = ?", (event_id,)).fetchone()
    return json.loads(row[0]) if row else {}


def personal_columns(conn: sqlite3.Connection, event_id: str | None) -> list[str]:
    """Every personal field of the event's entries: participants first, then the package's columns."""
    listed = event_options(conn, event_id).get(PERSONAL_COLUMNS) or []
    return [PARTICIPANTS, *(column for column in listed if column != PARTICIPANTS)]


def tablets_see_participants(conn: sqlite3.Connection, event_id: str | None) -> bool:
    return event_options(conn, event_id).get(TABLETS_SEE_PARTICIPANTS) is True


def seal_fields(key: bytes, event_id: str, entry_id: str, values: dict[str, str]) -> str | None:
    """The ``personal_enc`` of an entry: each non-empty value sealed on its own."""
    sealed = {
        column: personal.encrypt(key, "entries", column, f"{event_id}/{entry_id}", value)
        for column, value in values.items()
        if value
    }
    return json.dumps(sealed, sort_keys=True) if sealed else None


def participant_names(key: bytes, event_id: str, entry_id: str, sealed: str | None) -> list[str]:
    if not sealed:
        return []
    text = personal.decrypt(key, "entries", PARTICIPANTS, f"{event_id}/{entry_id}", sealed)
    return [name.strip() for name in text.split(";") if name.strip()]


def _event_id(conn: sqlite3.Connection) -> str | None:
    # The box's current event (appliance/core/event.py reads the event through this module).
    return get_box(conn)["event_id"]


def _entry(conn: sqlite3.Connection, entry_id: str) -> tuple[str, sqlite3.Row]:
    event_id = _event_id(conn)
    row = conn.execute(
        "SELECT participants_enc, personal_enc FROM entries WHERE event_id = ? AND entry_id = ?",
        (event_id, entry_id),
    ).fetchone()
    if event_id is None or row is None:
        raise NotFound(f"no entry {entry_id!r} in the current event")
    return event_id, row


def _value(key: bytes, event_id: str, entry_id: str, row: sqlite3.Row, field: str) -> Value:
    if field == PARTICIPANTS:
        return participant_names(key, event_id, entry_id, row["participants_enc"])
    sealed = json.loads(row["personal_enc"] or "{}").get(field)
    if sealed is None:
        return None
    return personal.decrypt(key, "entries", field, f"{event_id}/{entry_id}", sealed)


def mask(field: str, value: Value) -> Value:
    """Participants to initials ("N. R."); any other value to its first character and '•••'."""
    if value is None:
        return None
    if isinstance(value, list):
        return [personal.mask(name) for name in value]
    return personal.mask(value) if field == PARTICIPANTS else personal.mask_value(value)


def value(conn: sqlite3.Connection, key: bytes, entry_id: str, field: str) -> Value:
    """One personal field of an entry of the current event, in full (callers mask or audit it)."""
    event_id, row = _entry(conn, entry_id)
    return _value(key, event_id, entry_id, row, field)


def masked(conn: sqlite3.Connection, key: bytes, entry_id: str) -> dict[str, Value]:
    """Every personal field of the entry, masked, in the event's order (participants first)."""
    event_id, row = _entry(conn, entry_id)
    return {
        field: mask(field, _value(key, event_id, entry_id, row, field))
        for field in personal_columns(conn, event_id)
    }


def reveal(
    conn: sqlite3.Connection,
    key: bytes,
    entry_id: str,
    field: str,
    actor: str,
    reason: str,
    request_id: str | None = None,
) -> Value:
    """One personal field of the entry in full, in the writer's transaction with exactly one access
    record. The record names the entry, the field and the reason, never the value."""
    reason = reason.strip()
    if len(reason) < 3:
        raise InvalidInput(
            "say why you need to see it (e.g. 'parent asking at the desk, entry 142')",
            [{"field": "reason", "message": "a reason of at least 3 characters is required"}],
        )
    fields = personal_columns(conn, _event_id(conn))
    if field not in fields:
        raise InvalidInput(
            f"{field!r} is not a personal field of this event (it has: {', '.join(fields)})",
            [{"field": "field", "message": f"one of: {', '.join(fields)}"}],
        )
    event_id, row = _entry(conn, entry_id)
    shown = _value(key, event_id, entry_id, row, field)
    detail: dict[str, Any] = {"entry_id": entry_id, "field": field, "reason": reason[:500]}
    if isinstance(shown, list):
        detail["count"] = len(shown)
    audit.record(conn, actor, "personal.reveal", detail, request_id)
    return shown
