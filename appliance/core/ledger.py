"""The score ledger: accepting sheets, corrections, and reading the current sheet of (entry, judge).

The ledger is append-only (triggers) and hash-chained (``appliance/core/chain.py``). A correction is a
new sheet whose ``supersedes`` names the judge's current sheet for that entry; the current sheet is
the head of that chain. ``submit_sheets`` (under ``submit_sheet`` and ``submit_batch``) runs inside
the writer's transaction, and every rule is checked there, so the answer is decided against exactly
the state it is stored into.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from appliance.core import chain, outbox, sessions
from appliance.core.box import ensure_not_frozen, require_event
from appliance.core.devices import EXPIRED, Device
from appliance.shared.canonical import canonical_json, content_hash
from appliance.shared.errors import (
    DomainError,
    EntryNotOnPanel,
    Frozen,
    IdempotencyMismatch,
    InvalidInput,
    NoEvent,
    NotAuthenticated,
    SessionLocked,
    SheetConflict,
    SignedOff,
    UnknownEntry,
)
from appliance.shared.sheets import CurrentSheet, StoredSheet
from appliance.shared.times import now_rfc3339


def current_sheet_seqs(*, entry: bool = False, judge: bool = False) -> str:
    """The one definition of a current sheet, as SQL for ``seq IN (...)``: the seq of the head of
    every (entry, judge) chain of the event bound to ``:event`` (only entry ``:entry``'s, judge
    ``:judge``'s when asked). The head is the chain's newest sheet: a chain is linear (one original,
    no forks: unique indexes) and a correction must supersede the head (``decide``), so it is the
    one sheet of the pair no other sheet supersedes. Read from the covering ``sheets_by_entry_judge``
    index; for one pair, a single index lookup however long its chain."""
    where = "event_id = :event"
    if entry:
        where += " AND entry_id = :entry"
    if judge:
        where += " AND judge_id = :judge"
    # One pair is one group: without GROUP BY, SQLite reads its max(seq) straight off the index
    # instead of walking the whole chain.
    group = "" if entry and judge else " GROUP BY entry_id, judge_id"
    return f"SELECT max(seq) FROM sheets WHERE {where}{group}"


@dataclass(frozen=True, slots=True)
class SheetSubmission:
    """A sheet as the edge validated its shape (types, lengths, UUIDs, RFC 3339)."""

    sheet_id: str
    entry_id: str
    values: dict[str, float]
    submitted_at: str
    comment: str | None = None
    supersedes: str | None = None

    def idempotency_content(self, judge_id: str, values: dict[str, float]) -> dict[str, Any]:
        """What "the same sheet" means: everything the judge decided (``values`` as stored, on
        their steps), plus who decided it."""
        return {
            "entry_id": self.entry_id,
            "judge_id": judge_id,
            "values": values,
            "comment": self.comment or None,
            "submitted_at": self.submitted_at,
            "supersedes": self.supersedes,
        }


@dataclass(frozen=True, slots=True)
class SheetReceipt:
    """A sheet the ledger accepted: stored now (201) or already stored (200, a replay)."""

    status: int  # 201 stored now, 200 replay of a stored sheet
    sheet: StoredSheet


def stored_sheet(row: sqlite3.Row | dict[str, Any]) -> StoredSheet:
    """The receipt of a stored sheet, built only from its ledger row, so a replay is identical."""
    return StoredSheet(**{name: row[name] for name in StoredSheet.__struct_fields__})


@dataclass(frozen=True, slots=True)
class LedgerScope:
    """What the rules need of the event, read once per call inside the writer's transaction, so it
    is exactly the state the sheets go into."""

    event_id: str
    criteria: dict[str, tuple[str, float, float, float]]  # key -> (label, min, max, step)
    panels: dict[str, frozenset[str]]  # judge_id -> the sessions they score
    locked: frozenset[str] = frozenset()  # sessions the tech locked
    signed_off: frozenset[tuple[str, str]] = frozenset()  # (session_id, judge_id) signed off


def submit_sheet(conn: sqlite3.Connection, device: Device, sheet: SheetSubmission) -> SheetReceipt:
    """Store one sheet (inside the writer's transaction) or raise the domain error that refuses it."""
    outcome = submit_sheets(conn, [(device, sheet)])[0]
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def submit_batch(
    conn: sqlite3.Connection, device: Device, items: list[SheetSubmission | DomainError]
) -> list[SheetReceipt | DomainError]:
    """A tablet's batch: every item answered as the single call would answer it. A refusal of the
    whole call (box frozen, device revoked, no event) is raised, not repeated per item, so the
    batch answers 423/401/503 like any other competition write."""
    outcomes = submit_sheets(conn, [(device, item) for item in items])
    for outcome in outcomes:
        if isinstance(outcome, Frozen | NotAuthenticated | NoEvent):
            raise outcome
    return outcomes


def submit_sheets(
    conn: sqlite3.Connection, items: Sequence[tuple[Device, SheetSubmission | DomainError]]
) -> list[SheetReceipt | DomainError]:
    """Decide every sheet in order, then store the accepted ones together, inside the caller's
    (writer) transaction. Items that are already errors (refused at the edge) pass through. Each
    sheet is decided on its own, so one bad sheet never takes the others along, and later sheets
    see earlier ones (a batch may hold a sheet and its correction). The sheets may come from many
    devices: concurrent single submissions share one call (see ``edge_api.context.SheetIntake``)."""
    try:
        ensure_not_frozen(conn)
        event_id = require_event(conn, "no event imported on this box")
    except DomainError as refused:  # frozen, or no event: every sheet gets that answer
        return [item if isinstance(item, DomainError) else refused for _, item in items]
    refused_devices = _refused_devices(conn, event_id, {device.device_id: device for device, _ in items})
    locked, signed_off = sessions.write_barriers(conn, event_id)
    scope = LedgerScope(
        event_id,
        _criteria(conn, event_id),
        _panels(conn, event_id, {d.judge_id for d, _ in items if d.device_id not in refused_devices}),
        locked,
        signed_off,
    )
    sheets = [
        (device, item)
        for device, item in items
        if isinstance(item, SheetSubmission) and device.device_id not in refused_devices
    ]
    view = _read_view(conn, event_id, sheets)
    received_at = now_rfc3339()
    outcomes: list[SheetReceipt | DomainError] = []
    accepted: list[dict[str, Any]] = []  # the new ledger rows
    for device, item in items:
        if isinstance(item, DomainError):
            outcomes.append(item)
            continue
        if device.device_id in refused_devices:
            outcomes.append(refused_devices[device.device_id])
            continue
        try:
            receipt, row = decide(scope, view, device, item, received_at)
        except DomainError as exc:
            outcomes.append(exc)
            continue
        outcomes.append(receipt)
        if row is not None:
            accepted.append(row)
    if accepted:
        chain.insert_rows(conn, "sheets", accepted)
        outbox.enqueue_sheets(conn, [row["seq"] for row in accepted])
    return outcomes


def _refused_devices(
    conn: sqlite3.Connection, event_id: str, devices: dict[str, Device]
) -> dict[str, DomainError]:
    """Devices that may not write now: revoked (a revoke that committed first always wins), with an
    expired token, or paired for an event that is no longer on the box."""
    ids = list(devices)
    active: dict[str, str | None] = {}
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT device_id, expires_at FROM devices WHERE revoked_at IS NULL AND device_id IN ({marks})"
        active.update((row[0], row[1]) for row in conn.execute(sql, chunk))
    refused: dict[str, DomainError] = {}
    now = now_rfc3339()
    for device_id, device in devices.items():
        if device_id not in active:
            refused[device_id] = NotAuthenticated("this device was revoked: pair this tablet again")
        elif (expires_at := active[device_id]) is not None and now >= expires_at:  # both UTC, one format
            refused[device_id] = NotAuthenticated(EXPIRED)
        elif device.event_id != event_id:
            refused[device_id] = NotAuthenticated("this tablet was paired for another event: pair it again")
    return refused


def _criteria(conn: sqlite3.Connection, event_id: str) -> dict[str, tuple[str, float, float, float]]:
    rows = conn.execute("SELECT key, label, min, max, step FROM criteria WHERE event_id = ?", (event_id,))
    return {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}


def _panels(conn: sqlite3.Connection, event_id: str, judge_ids: set[str]) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {judge_id: set() for judge_id in judge_ids}
    for chunk in _chunks(list(judge_ids)):
        marks = ",".join("?" * len(chunk))
        for judge_id, session_id in conn.execute(
            f"SELECT judge_id, session_id FROM panels WHERE event_id = ? AND judge_id IN ({marks})",
            (event_id, *chunk),
        ):
            found[judge_id].add(session_id)
    return {judge_id: frozenset(sessions) for judge_id, sessions in found.items()}


@dataclass(slots=True)
class LedgerView:
    """What the rules need to know of the ledger for the sheets at hand, read once per call and
    kept current in memory as sheets are decided (inside one transaction, nobody else writes)."""

    stored: dict[str, Any]  # sheet_id -> stored row, for the sheet ids at hand
    entry_sessions: dict[str, str]  # entry_id -> session_id, for known entries at hand
    heads: dict[tuple[str, str], str]  # (entry_id, judge_id) -> current sheet_id
    tail: tuple[int, str]  # the ledger chain's last (seq, hash)


def _read_view(
    conn: sqlite3.Connection, event_id: str, sheets: list[tuple[Device, SheetSubmission]]
) -> LedgerView:
    sheet_ids = list({sheet.sheet_id for _, sheet in sheets})
    entry_ids = list({sheet.entry_id for _, sheet in sheets})
    stored: dict[str, Any] = {}
    for chunk in _chunks(sheet_ids):
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT * FROM sheets WHERE sheet_id IN ({marks})", chunk):
            stored[row["sheet_id"]] = row
    entry_sessions: dict[str, str] = {}
    heads: dict[tuple[str, str], str] = {}
    for chunk in _chunks(entry_ids):
        marks = ",".join("?" * len(chunk))
        entry_sessions.update(
            conn.execute(
                f"SELECT entry_id, session_id FROM entries WHERE event_id = ? AND entry_id IN ({marks})",
                (event_id, *chunk),
            ).fetchall()
        )
    # One index lookup per pair, however long its chain.
    head_sql = f"SELECT sheet_id FROM sheets WHERE seq IN ({current_sheet_seqs(entry=True, judge=True)})"
    for entry_id, judge_id in {(sheet.entry_id, device.judge_id) for device, sheet in sheets}:
        row = conn.execute(head_sql, {"event": event_id, "entry": entry_id, "judge": judge_id}).fetchone()
        if row is not None:
            heads[(entry_id, judge_id)] = row[0]
    return LedgerView(stored, entry_sessions, heads, chain.head(conn, "sheets"))


def _chunks(values: list[str], size: int = 500) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def decide(
    scope: LedgerScope, view: LedgerView, device: Device, sheet: SheetSubmission, received_at: str
) -> tuple[SheetReceipt, dict[str, Any] | None]:
    """Every rule for one sheet, in one place: the receipt, plus the new ledger row to insert (None
    for a replay), or the DomainError that refuses it. Updates ``view`` for the sheets after it."""
    values = _checked_values(scope.criteria, sheet.values)
    fingerprint = content_hash(sheet.idempotency_content(device.judge_id, values))

    stored = view.stored.get(sheet.sheet_id)
    if stored is not None:
        if stored["content_hash"] == fingerprint:
            return SheetReceipt(200, stored_sheet(stored)), None
        raise IdempotencyMismatch(
            f"sheet {sheet.sheet_id} was already stored with different content; "
            "a changed sheet needs a new sheet_id (and `supersedes` to correct)",
            sheet_id=sheet.sheet_id,
        )

    session_id = view.entry_sessions.get(sheet.entry_id)
    if session_id is None:
        raise UnknownEntry(
            f"entry {sheet.entry_id!r} is not in event {scope.event_id!r}", entry_id=sheet.entry_id
        )
    if session_id not in scope.panels.get(device.judge_id, ()):
        raise EntryNotOnPanel(
            f"entry {sheet.entry_id!r} is in session {session_id!r}, "
            f"which is not on judge {device.judge_id!r}'s panel"
        )
    # A lock wins over a sign-off; both only after the replay above, so a sheet stored before them
    # still gets its receipt (the tablet may then forget it).
    if session_id in scope.locked:
        raise SessionLocked(
            f"session {session_id!r} is locked by the venue tech: no sheet for entry {sheet.entry_id!r} "
            "is taken until it is unlocked"
        )
    if (session_id, device.judge_id) in scope.signed_off:
        raise SignedOff(
            f"judge {device.judge_id!r} signed off session {session_id!r}: sheets for entry "
            f"{sheet.entry_id!r} are read-only until the venue tech reopens the sign-off"
        )

    current = view.heads.get((sheet.entry_id, device.judge_id))
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

    row = chain.link(
        "sheets",
        view.tail,
        {
            "sheet_id": sheet.sheet_id,
            "event_id": scope.event_id,
            "entry_id": sheet.entry_id,
            "judge_id": device.judge_id,
            "device_id": device.device_id,
            "score_values": canonical_json(values),
            "comment": sheet.comment or None,
            "submitted_at": sheet.submitted_at,
            "received_at": received_at,
            "supersedes": sheet.supersedes,
            "content_hash": fingerprint,
        },
    )
    view.tail = (row["seq"], row["hash"])
    view.stored[sheet.sheet_id] = row
    view.heads[(sheet.entry_id, device.judge_id)] = sheet.sheet_id
    return SheetReceipt(201, stored_sheet(row)), row


def _checked_values(
    criteria: dict[str, tuple[str, float, float, float]], values: dict[str, float]
) -> dict[str, float]:
    """The values on their criteria's steps (see ``on_step``), keyed in criterion order, or
    InvalidInput naming each bad one."""
    checked: dict[str, float] = {}
    errors: list[dict[str, str]] = []
    for key, (label, minimum, maximum, step) in criteria.items():
        value = values.get(key)
        if value is None:
            errors.append({"field": f"values.{key}", "message": f"missing a score for {label}"})
        elif isinstance(value, bool) or not isinstance(value, int | float):
            errors.append({"field": f"values.{key}", "message": "must be a number"})
        else:
            problem, normalised = _verdict(float(value), minimum, maximum, step)
            if problem:
                errors.append({"field": f"values.{key}", "message": problem})
            else:
                checked[key] = normalised
    if len(values) != len(checked) + len(errors):
        errors.extend(
            {"field": f"values.{key}", "message": "not a criterion of this event"}
            for key in sorted(set(values) - set(criteria))
        )
    if errors:
        raise InvalidInput("the scores do not fit the event's criteria", errors)
    return checked


@lru_cache(maxsize=8192)
def _verdict(value: float, minimum: float, maximum: float, step: float) -> tuple[str | None, float]:
    # Scores come from a small set (0-10 on a 0.1 step is 101 values), so the decimal work is cached.
    problem = value_problem(value, minimum, maximum, step)
    return problem, (value if problem else on_step(value, minimum, step))


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
    # The range first: "between 0 and 10" tells a judge more about 10.05 than "on a step of 0.1".
    if v < lo - st * STEP_TOLERANCE or v > hi + st * STEP_TOLERANCE:
        return f"must be between {_num(minimum)} and {_num(maximum)}"
    off_step = (v - lo) / st - ((v - lo) / st).to_integral_value()
    if abs(off_step) > STEP_TOLERANCE:
        return f"must be on a step of {_num(step)} from {_num(minimum)}"
    return None


def _num(x: float) -> str:
    return f"{x:g}"


def sheets_for_judge(conn: sqlite3.Connection, event_id: str, judge_id: str) -> list[CurrentSheet]:
    """The judge's current sheets (heads of their chains), for the tablet's event download."""
    rows = conn.execute(
        f"SELECT * FROM sheets WHERE seq IN ({current_sheet_seqs(judge=True)}) ORDER BY seq",
        {"event": event_id, "judge": judge_id},
    )
    return [
        CurrentSheet(
            sheet_id=r["sheet_id"],
            entry_id=r["entry_id"],
            values=json.loads(r["score_values"]),
            comment=r["comment"],
            submitted_at=r["submitted_at"],
            received_at=r["received_at"],
            supersedes=r["supersedes"],
        )
        for r in rows
    ]
