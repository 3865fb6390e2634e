"""Judges' sign-offs and the tech's session locks: when a session's results are final.

A judge signs off a session from their tablet (``POST /api/v1/sessions/{id}/final``): from then on
their sheets for it are read-only (``SignedOff``, 423) until the tech reopens the sign-off. The tech
locks a session before awards: no sheet for it at all (``SessionLocked``, 423, which wins) until an
unlock. Both are checked by the ledger inside the writer's transaction (``write_barriers``, read once
per call by ``appliance/core/ledger.py:submit_sheets``), so a lock committed by any process (the CLI
writes the database directly) holds at the very next sheet. A session's results are final when it
is locked and every judge of its panel signed off (``is_final``); everything else is provisional.

Every change is an audit record (``session.sign_off``, ``session.reopen``, ``session.lock``,
``session.unlock``), which the uplink sends to the cloud; a lock's record carries the rule set the
results use (the scoring block, each criterion's weight and kind, the event's snapshot), the panel
and the sign-offs, so the cloud can reproduce every result from it and the sheets it holds.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from appliance.core import audit
from appliance.core.box import current_event_id, ensure_not_frozen, require_event
from appliance.core.devices import Device, ensure_active
from appliance.core.event_package.format import criterion_rule_of, scoring_of
from appliance.shared.errors import (
    InvalidInput,
    NoEvent,
    NotAuthenticated,
    NotFound,
    SessionNotOnPanel,
)
from appliance.shared.results_wire import SessionState
from appliance.shared.times import now_rfc3339

# The longest reason a lock, an unlock or a reopen keeps (the admin API refuses longer ones).
REASON_MAX_CHARS = 500


def session_states(conn: sqlite3.Connection) -> dict[str, SessionState]:
    """Every session of the current event (in the event's order) with its lock, its panel and the
    judges of the panel who signed it off; empty before the first import."""
    event_id = current_event_id(conn)
    if event_id is None:
        return {}
    panels: dict[str, list[str]] = {}
    for session_id, judge_id in conn.execute(
        "SELECT session_id, judge_id FROM panels WHERE event_id = ? ORDER BY judge_id", (event_id,)
    ):
        panels.setdefault(session_id, []).append(judge_id)
    signed: dict[str, list[str]] = {}
    for session_id, judge_id in conn.execute(
        "SELECT session_id, judge_id FROM sign_offs WHERE event_id = ? ORDER BY judge_id", (event_id,)
    ):
        signed.setdefault(session_id, []).append(judge_id)
    locks = {
        row[0]: (row[1], row[2])
        for row in conn.execute(
            "SELECT session_id, reason, changed_at FROM session_locks WHERE event_id = ? AND locked = 1",
            (event_id,),
        )
    }
    states: dict[str, SessionState] = {}
    for (session_id,) in conn.execute(
        "SELECT session_id FROM sessions WHERE event_id = ? ORDER BY position", (event_id,)
    ):
        panel = panels.get(session_id, [])
        reason, at = locks.get(session_id, (None, None))
        states[session_id] = SessionState(
            session_id=session_id,
            locked=session_id in locks,
            locked_reason=reason,
            locked_at=at,
            # A sign-off of a judge the event no longer seats on the panel does not count.
            signed_off=[judge_id for judge_id in signed.get(session_id, []) if judge_id in panel],
            panel=panel,
        )
    return states


def is_final(state: SessionState) -> bool:
    """Locked, and every judge of the panel signed off (a session with no panel is never final)."""
    return state.locked and bool(state.panel) and set(state.panel) <= set(state.signed_off)


def session_state(conn: sqlite3.Connection, session_id: str) -> SessionState:
    """One session's state; ``NoEvent`` before the first import, ``NotFound`` for a session the
    event does not have."""
    event_id = require_event(conn)
    state = session_states(conn).get(session_id)
    if state is None:
        raise NotFound(f"event {event_id!r} has no session {session_id!r}")
    return state


def write_barriers(
    conn: sqlite3.Connection, event_id: str
) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """What the ledger refuses sheets for: the locked sessions, and the (session, judge) pairs signed
    off. Read inside the writer's transaction, once per call."""
    locked = frozenset(
        row[0]
        for row in conn.execute(
            "SELECT session_id FROM session_locks WHERE event_id = ? AND locked = 1", (event_id,)
        )
    )
    signed = frozenset(
        (row[0], row[1])
        for row in conn.execute("SELECT session_id, judge_id FROM sign_offs WHERE event_id = ?", (event_id,))
    )
    return locked, signed


def sign_off(
    conn: sqlite3.Connection, device: Device, session_id: str, request_id: str | None = None
) -> dict[str, str]:
    """The device's judge signs ``session_id`` off (inside the writer's transaction): the sign-off
    ``{session_id, judge_id, signed_off_at}``. Idempotent: a second call answers the first sign-off
    and records nothing. Refused like a sheet while the box is frozen (a sign-off is a competition
    write), for a revoked device or one paired for another event, for an unknown session
    (``NotFound``) and for a session not on the judge's panel (``SessionNotOnPanel``). Entries left
    unscored do not stop it: the judge app lists them and asks first."""
    ensure_not_frozen(conn)
    ensure_active(conn, device)
    event_id = require_event(conn)
    if device.event_id != event_id:
        raise NotAuthenticated("this tablet was paired for another event: pair it again")
    _require_session(conn, event_id, session_id)
    on_panel = conn.execute(
        "SELECT 1 FROM panels WHERE event_id = ? AND judge_id = ? AND session_id = ?",
        (event_id, device.judge_id, session_id),
    ).fetchone()
    if on_panel is None:
        raise SessionNotOnPanel(
            f"session {session_id!r} is not on judge {device.judge_id!r}'s panel: nothing to sign off"
        )
    held = _signed_off_at(conn, event_id, session_id, device.judge_id)
    if held is None:
        held = now_rfc3339()
        conn.execute(
            "INSERT INTO sign_offs (event_id, session_id, judge_id, signed_off_at, device_id)"
            " VALUES (?, ?, ?, ?, ?)",
            (event_id, session_id, device.judge_id, held, device.device_id),
        )
        audit.record(
            conn,
            f"device:{device.device_id}",
            "session.sign_off",
            {
                "event_id": event_id,
                "session_id": session_id,
                "judge_id": device.judge_id,
                "device_id": device.device_id,
                "signed_off_at": held,
            },
            request_id,
        )
    return {"session_id": session_id, "judge_id": device.judge_id, "signed_off_at": held}


def reopen(
    conn: sqlite3.Connection,
    session_id: str,
    judge_id: str,
    reason: str,
    actor: str = "cli",
    request_id: str | None = None,
) -> SessionState:
    """The tech takes back a judge's sign-off of a session (a reason is required): the judge may
    send sheets and corrections for it again (unless the session is locked). ``NotFound`` when that
    judge has no sign-off of that session."""
    reason = required_reason(reason, "reopening a sign-off")
    event_id = require_event(conn)
    _require_session(conn, event_id, session_id)
    held = _signed_off_at(conn, event_id, session_id, judge_id)
    if held is None:
        raise NotFound(f"judge {judge_id!r} has not signed off session {session_id!r}: nothing to reopen")
    conn.execute(
        "DELETE FROM sign_offs WHERE event_id = ? AND session_id = ? AND judge_id = ?",
        (event_id, session_id, judge_id),
    )
    audit.record(
        conn,
        actor,
        "session.reopen",
        {
            "event_id": event_id,
            "session_id": session_id,
            "judge_id": judge_id,
            "reason": reason,
            "signed_off_at": held,
        },
        request_id,
    )
    return session_state(conn, session_id)


def lock(
    conn: sqlite3.Connection,
    session_id: str,
    reason: str,
    actor: str = "cli",
    request_id: str | None = None,
) -> SessionState:
    """Lock a session (a reason is required): every sheet for it is refused until an unlock. Locking
    a locked session changes nothing and records nothing (the first reason stays). The audit record
    carries the rule set, the panel and the sign-offs at the lock, for the cloud."""
    reason = required_reason(reason, "a lock")
    event_id = require_event(conn)
    state = _state_of(conn, event_id, session_id)
    if state.locked:
        return state
    at = now_rfc3339()
    _set_lock(conn, event_id, session_id, True, reason, at, actor)
    locked = session_state(conn, session_id)
    audit.record(
        conn,
        actor,
        "session.lock",
        {
            "event_id": event_id,
            "session_id": session_id,
            "reason": reason,
            "locked_at": at,
            "panel": locked.panel,
            "signed_off": locked.signed_off,
            "rules": rule_set(conn, event_id),
        },
        request_id,
    )
    return locked


def unlock(
    conn: sqlite3.Connection,
    session_id: str,
    reason: str,
    actor: str = "cli",
    request_id: str | None = None,
) -> SessionState:
    """Unlock a session (a reason is required): sheets for it are taken again (a judge's own
    sign-off still holds for them). Unlocking a session that is not locked changes nothing."""
    reason = required_reason(reason, "an unlock")
    event_id = require_event(conn)
    state = _state_of(conn, event_id, session_id)
    if not state.locked:
        return state
    _set_lock(conn, event_id, session_id, False, reason, now_rfc3339(), actor)
    audit.record(
        conn,
        actor,
        "session.unlock",
        {"event_id": event_id, "session_id": session_id, "reason": reason, "was": state.locked_reason},
        request_id,
    )
    return session_state(conn, session_id)


def rule_set(conn: sqlite3.Connection, event_id: str) -> dict[str, Any]:
    """The rules results are computed by, as JSON: the event's snapshot, its scoring block (its
    defaults when the package has none) and each criterion's weight and kind, in order."""
    event = conn.execute("SELECT snapshot_id, extra FROM events WHERE event_id = ?", (event_id,)).fetchone()
    if event is None:
        raise NoEvent(f"event {event_id!r} is no longer on this box")
    criteria = {
        key: msgspec.to_builtins(criterion_rule_of(extra))
        for key, extra in conn.execute(
            "SELECT key, extra FROM criteria WHERE event_id = ? ORDER BY position", (event_id,)
        )
    }
    scoring: dict[str, Any] = msgspec.to_builtins(scoring_of(event[1]))
    return {"snapshot_id": event[0], "scoring": scoring, "criteria": criteria}


def _set_lock(
    conn: sqlite3.Connection, event_id: str, session_id: str, locked: bool, reason: str, at: str, actor: str
) -> None:
    conn.execute(
        "INSERT INTO session_locks (event_id, session_id, locked, reason, changed_at, changed_by)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, session_id) DO UPDATE SET"
        " locked = excluded.locked, reason = excluded.reason, changed_at = excluded.changed_at,"
        " changed_by = excluded.changed_by",
        (event_id, session_id, int(locked), reason, at, actor),
    )


def _state_of(conn: sqlite3.Connection, event_id: str, session_id: str) -> SessionState:
    state = session_states(conn).get(session_id)
    if state is None:
        raise NotFound(f"event {event_id!r} has no session {session_id!r}")
    return state


def _signed_off_at(conn: sqlite3.Connection, event_id: str, session_id: str, judge_id: str) -> str | None:
    row = conn.execute(
        "SELECT signed_off_at FROM sign_offs WHERE event_id = ? AND session_id = ? AND judge_id = ?",
        (event_id, session_id, judge_id),
    ).fetchone()
    return None if row is None else str(row[0])


def _require_session(conn: sqlite3.Connection, event_id: str, session_id: str) -> None:
    found = conn.execute(
        "SELECT 1 FROM sessions WHERE event_id = ? AND session_id = ?", (event_id, session_id)
    ).fetchone()
    if found is None:
        raise NotFound(f"event {event_id!r} has no session {session_id!r}")


def required_reason(reason: str, what: str) -> str:
    """``reason`` stripped; ``InvalidInput`` when it is empty or longer than REASON_MAX_CHARS (``what``
    names the action: "a lock")."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput(
            f"{what} needs a reason (kept in the audit log)",
            [{"field": "reason", "message": "must not be empty"}],
        )
    if len(reason) > REASON_MAX_CHARS:
        raise InvalidInput(
            f"the reason is longer than {REASON_MAX_CHARS} characters",
            [{"field": "reason", "message": f"must have at most {REASON_MAX_CHARS} characters"}],
        )
    return reason
