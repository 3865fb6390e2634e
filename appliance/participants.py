"""Participants' names: personal data, AES-256-GCM at rest (``appliance/personal.py``), never in a
tablet's view unless the event sets ``tablets_see_participants``, masked in the tech's views, and
shown in full only on a reveal that states a reason and leaves one access record in the audit log
(who, whose, which field, when, request id, why). The participants case of
``appliance/personal_fields.py``, kept for the ``/participants`` endpoints."""

from __future__ import annotations

import sqlite3

from appliance import personal, personal_fields

FIELD = personal_fields.PARTICIPANTS


def masked(conn: sqlite3.Connection, key: bytes, entry_id: str) -> list[str]:
    """The entry's participants as initials ("N. R."): enough to tell entries apart, not to identify."""
    names = personal_fields.value(conn, key, entry_id, FIELD)
    return [personal.mask(name) for name in names or []]


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
    names = personal_fields.reveal(conn, key, entry_id, FIELD, actor, reason, request_id)
    return names if isinstance(names, list) else []
