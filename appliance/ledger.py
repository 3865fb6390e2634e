"""The score ledger: accepting sheets, corrections, and reading the current sheet of (entry, judge).

The ledger is append-only (triggers) and hash-chained (``appliance/chain.py``). A correction is a
new sheet whose ``supersedes`` names the judge's current sheet for that entry; the current sheet is
the head of that chain. ``submit_sheet`` runs inside the writer's transaction, and every rule is
checked there, so the answer is decided against exactly the state it is stored into.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from appliance import chain, outbox
from appliance.box import ensure_not_frozen
from appliance.canonical import canonical_json, content_hash
from appliance.devices import Device, ensure_active
from appliance.errors import (
    EntryNotOnPanel,
    IdempotencyMismatch,
    InvalidInput,
    NoEvent,
    SheetConflict,
    UnknownEntry,
)
from appliance.times import now_rfc3339


@dataclass(frozen=True, slots=True)
class SheetSubmission:
    """A sheet as the edge validated its shape (types, lengths, UUIDs, RFC 3339)."""

    sheet_id: str
    entry_id: str
    values: dict[str, float]
    submitted_at: str
    comment: str | None = None
    supersedes: str | None = None

    def idempotency_content(self, judge_id: str) -> dict[str, Any]:
        # What "the same sheet" means: everything the judge decided, plus who decided it.
        return {
            "entry_id": self.entry_id,
            "judge_id": judge_id,
            "values": {k: float(v) for k, v in sorted(self.values.items())},
            "comment": self.comment or None,
            "submitted_at": self.submitted_at,
            "supersedes": self.supersedes,
        }


@dataclass(frozen=True, slots=True)
class SheetReceipt:
    status: int  # 201 stored now, 200 replay of a stored sheet
    body: dict[str, Any]


def receipt_body(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    """The answer for a stored sheet, built only from what is stored, so a replay is identical."""
    return {
        "sheet_id": row["sheet_id"],
        "entry_id": row["entry_id"],
        "judge_id": row["judge_id"],
        "supersedes": row["supersedes"],
        "seq": row["seq"],
        "received_at": row["received_at"],
        "hash": row["hash"],
    }


def submit_sheet(
    conn: sqlite3.Connection, device: Device, sheet: SheetSubmission, request_id: str | None = None
) -> SheetReceipt:
    ensure_not_frozen(conn)
    ensure_active(conn, device)
    event_id = _current_event(conn)
    values = _checked_values(conn, event_id, sheet.values)
    sheet = replace(sheet, values=values)
    fingerprint = content_hash(sheet.idempotency_content(device.judge_id))

    stored = conn.execute("SELECT * FROM sheets WHERE sheet_id = ?", (sheet.sheet_id,)).fetchone()
    if stored is not None:
        if stored["content_hash"] == fingerprint:
            return SheetReceipt(200, receipt_body(stored))
        raise IdempotencyMismatch(
            f"sheet {sheet.sheet_id} was already stored with different content; "
            "a changed sheet needs a new sheet_id (and `supersedes` to correct)",
            sheet_id=sheet.sheet_id,
        )

    entry = conn.execute(
        "SELECT session_id FROM entries WHERE event_id = ? AND entry_id = ?", (event_id, sheet.entry_id)
    ).fetchone()
    if entry is None:
        raise UnknownEntry(f"entry {sheet.entry_id!r} is not in event {event_id!r}", entry_id=sheet.entry_id)
    on_panel = conn.execute(
        "SELECT 1 FROM panels WHERE event_id = ? AND judge_id = ? AND session_id = ?",
        (event_id, device.judge_id, entry["session_id"]),
    ).fetchone()
    if on_panel is None or device.event_id != event_id:
        raise EntryNotOnPanel(
            f"entry {sheet.entry_id!r} is in session {entry['session_id']!r}, "
            f"which is not on judge {device.judge_id!r}'s panel"
        )

    current = current_sheet_id(conn, event_id, sheet.entry_id, device.judge_id)
    if sheet.supersedes is None and current is not None:
        raise SheetConflict(
            f"judge {device.judge_id!r} already has a sheet for entry {sheet.entry_id!r}; "
            "send a correction with `supersedes` set to the current sheet",
            current_sheet_id=current,
        )
    if sheet.supersedes is not None and sheet.supersedes != current:
        raise SheetConflict(
            f"sheet {sheet.supersedes} is not the current sheet of judge {device.judge_id!r} "
            f"for entry {sheet.entry_id!r}; correct the current one",
            current_sheet_id=current,
        )

    row = chain.append(
        conn,
        "sheets",
        {
            "sheet_id": sheet.sheet_id,
            "event_id": event_id,
            "entry_id": sheet.entry_id,
            "judge_id": device.judge_id,
            "device_id": device.device_id,
            "score_values": canonical_json(values),
            "comment": sheet.comment or None,
            "submitted_at": sheet.submitted_at,
            "received_at": now_rfc3339(),
            "supersedes": sheet.supersedes,
            "content_hash": fingerprint,
        },
    )
    outbox.enqueue(conn, "sheet", sheet_record(row))
    return SheetReceipt(201, receipt_body(row))


def sheet_record(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    """A stored sheet as it travels (uplink, exports)."""
    return {
        **receipt_body(row),
        "event_id": row["event_id"],
        "device_id": row["device_id"],
        "values": json.loads(row["score_values"]),
        "comment": row["comment"],
        "submitted_at": row["submitted_at"],
        "prev_hash": row["prev_hash"],
    }


def _current_event(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT event_id FROM box WHERE id = 1").fetchone()
    if row is None or row[0] is None:
        raise NoEvent("no event imported on this box")
    return row[0]


def current_sheet_id(conn: sqlite3.Connection, event_id: str, entry_id: str, judge_id: str) -> str | None:
    """The head of the (entry, judge) correction chain: the one sheet nobody supersedes."""
    row = conn.execute(
        """
        SELECT s.sheet_id FROM sheets s
        WHERE s.event_id = ? AND s.entry_id = ? AND s.judge_id = ?
          AND NOT EXISTS (SELECT 1 FROM sheets t WHERE t.supersedes = s.sheet_id)
        """,
        (event_id, entry_id, judge_id),
    ).fetchone()
    return row[0] if row else None


def _checked_values(conn: sqlite3.Connection, event_id: str, values: dict[str, float]) -> dict[str, float]:
    """The values on their criteria's steps (see ``on_step``), or InvalidInput naming each bad one."""
    criteria = {
        row["key"]: row
        for row in conn.execute(
            "SELECT key, label, min, max, step FROM criteria WHERE event_id = ?", (event_id,)
        )
    }
    errors: list[dict[str, str]] = []
    for key in sorted(set(criteria) - set(values)):
        errors.append({"field": f"values.{key}", "message": f"missing a score for {criteria[key]['label']}"})
    for key in sorted(set(values) - set(criteria)):
        errors.append({"field": f"values.{key}", "message": "not a criterion of this event"})
    checked: dict[str, float] = {}
    for key in sorted(set(values) & set(criteria)):
        c = criteria[key]
        problem = value_problem(values[key], c["min"], c["max"], c["step"])
        if problem:
            errors.append({"field": f"values.{key}", "message": problem})
        else:
            checked[key] = on_step(values[key], c["min"], c["step"])
    if errors:
        raise InvalidInput("the scores do not fit the event's criteria", errors)
    return checked


# A value within this fraction of a step from a step point is that step point: binary floating
# point makes 0.1 * 3 == 0.30000000000000004 in a tablet's JavaScript, and that is still 0.3.
STEP_TOLERANCE = Decimal("1e-9")


def _decimal(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def on_step(value: float, minimum: float, step: float) -> float:
    """The step point ``value`` stands for (exactly, in decimal), as a float."""
    lo, st = _decimal(minimum), _decimal(step)
    steps = ((_decimal(value) - lo) / st).to_integral_value()
    return float(lo + steps * st)


def value_problem(value: float, minimum: float, maximum: float, step: float) -> str | None:
    """Why ``value`` is not a valid score for a criterion, or None. Decimal arithmetic, so 9.4 on a
    0.1 step is on the step even though 9.4 / 0.1 is not an integer in binary floating point."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    try:
        v, lo, hi, st = (_decimal(x) for x in (value, minimum, maximum, step))
    except (InvalidOperation, ValueError, OverflowError):
        return "must be a finite number"
    if not v.is_finite():
        return "must be a finite number"
    off_step = (v - lo) / st - ((v - lo) / st).to_integral_value()
    if abs(off_step) > STEP_TOLERANCE:
        return f"must be on a step of {_num(step)} from {_num(minimum)}"
    if v < lo - st * STEP_TOLERANCE or v > hi + st * STEP_TOLERANCE:
        return f"must be between {_num(minimum)} and {_num(maximum)}"
    return None


def _num(x: float) -> str:
    return f"{x:g}"


def sheets_for_judge(conn: sqlite3.Connection, event_id: str, judge_id: str) -> list[dict[str, Any]]:
    """The judge's current sheets (heads of their chains), for the tablet's event download."""
    rows = conn.execute(
        """
        SELECT s.* FROM sheets s
        WHERE s.event_id = ? AND s.judge_id = ?
          AND NOT EXISTS (SELECT 1 FROM sheets t WHERE t.supersedes = s.sheet_id)
        ORDER BY s.seq
        """,
        (event_id, judge_id),
    )
    return [
        {
            "sheet_id": r["sheet_id"],
            "entry_id": r["entry_id"],
            "values": json.loads(r["score_values"]),
            "comment": r["comment"],
            "submitted_at": r["submitted_at"],
            "received_at": r["received_at"],
            "supersedes": r["supersedes"],
        }
        for r in rows
    ]
