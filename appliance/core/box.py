"""The box's identity and its freeze switch (the one place every competition write checks)."""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.core import audit
from appliance.shared.errors import Frozen, NoEvent, NotInitialised
from appliance.shared.status import FREEZE_CATEGORIES
from appliance.shared.times import now_rfc3339

NO_EVENT = "no event imported on this box: import one with `venuebox event import PATH`"


def current_event_id(conn: sqlite3.Connection) -> str | None:
    """The imported event's id; None before the first import."""
    row = conn.execute("SELECT event_id FROM box WHERE id = 1").fetchone()
    return None if row is None or row[0] is None else str(row[0])


def require_event(conn: sqlite3.Connection, message: str = NO_EVENT) -> str:
    """The imported event's id; ``NoEvent`` (with ``message``) before the first import."""
    event_id = current_event_id(conn)
    if event_id is None:
        raise NoEvent(message)
    return event_id


def get_box(conn: sqlite3.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM box WHERE id = 1").fetchone()
    if row is None:
        raise NotInitialised("this data dir has no box yet: run `venuebox init` first")
    return dict(row)


def ensure_not_frozen(conn: sqlite3.Connection) -> None:
    """Raise ``Frozen`` with the operator's reason. Called inside the writer's transaction by every
    competition write, so a freeze committed by any process takes effect on the very next write."""
    row = conn.execute("SELECT frozen, freeze_reason FROM box WHERE id = 1").fetchone()
    if row is not None and row[0]:
        raise Frozen(row[1] or "frozen by the venue tech")


def freeze(
    conn: sqlite3.Connection,
    reason: str,
    actor: str,
    request_id: str | None = None,
    *,
    category: str = "other",
) -> dict[str, Any]:
    reason = reason.strip()
    if not reason:
        raise ValueError("a freeze needs a reason (the judges see it)")
    if category not in FREEZE_CATEGORIES:
        raise ValueError(f"freeze category must be one of {', '.join(FREEZE_CATEGORIES)}, got {category!r}")
    box = get_box(conn)
    detail = {"reason": reason, "category": category}
    if box["frozen"]:
        # Already frozen: a second panic press keeps the first reason and category, and is still audited.
        audit.record(conn, actor, "freeze.repeat", detail, request_id)
        return get_box(conn)
    conn.execute(
        "UPDATE box SET frozen = 1, freeze_reason = ?, freeze_category = ?, frozen_at = ?, frozen_by = ?"
        " WHERE id = 1",
        (reason, category, now_rfc3339(), actor),
    )
    audit.record(conn, actor, "freeze", detail, request_id)
    return get_box(conn)


def unfreeze(conn: sqlite3.Connection, actor: str, request_id: str | None = None) -> dict[str, Any]:
    box = get_box(conn)
    if not box["frozen"]:
        return box
    conn.execute(
        "UPDATE box SET frozen = 0, freeze_reason = NULL, freeze_category = NULL, frozen_at = NULL,"
        " frozen_by = NULL WHERE id = 1"
    )
    audit.record(conn, actor, "unfreeze", {"was": box["freeze_reason"]}, request_id)
    return get_box(conn)
