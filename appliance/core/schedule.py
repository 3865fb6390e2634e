"""Day-of schedule changes: scratches, restores, walk-ons, moves and retimes, drafted, validated,
published as versions, undone by a rollback.

The imported schedule is version 1 (``schedule_versions``, written by the import, or on first use
for an event imported before this existed). A change is typed into the draft (``schedule_draft``)
only when it applies to the schedule as the draft already makes it: an unknown entry or session, a
move to a session whose panel has no judge (or lacks a judge who scored the entry), a change
touching a locked session is refused then, naming it, and the draft stays as it was.
``validate`` replays the whole draft on the current schedule and reports every problem at once:
errors (a change that no longer applies, duplicate running orders) refuse a publish; warnings (a
scratched entry with sheets, participants closer than the event's ``min_turnaround_min``) are said.
``publish`` applies the draft in one write transaction as version N+1 with an audit record of its
changes and diff (which the uplink sends to the cloud), or refuses and changes nothing; the freeze
refuses it. ``rollback N`` publishes a copy of version N, warnings and all.

Sheets are never touched: a scratched entry keeps its sheets (results and "missing" leave it out, a
restore brings it back), a walk-on left out by a rollback waits in the unscheduled pool
(``session_id`` NULL) with its sheets. A walk-on's participants are sealed with the data key when
typed; the draft never holds them in plain text, and audit records hold only their count.
"""

from __future__ import annotations

import copy
import itertools
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from appliance.core import audit, data_key, personal, personal_fields
from appliance.core.box import current_event_id, ensure_not_frozen, require_event
from appliance.core.sessions import required_reason, write_barriers
from appliance.shared.errors import Frozen, InvalidInput, NotFound, ScheduleConflict, SessionLocked
from appliance.shared.schedule_wire import (
    DiffLine,
    DraftView,
    Published,
    ScheduleChange,
    ScheduleProblem,
    ScheduleVersion,
    Validation,
)
from appliance.shared.times import now_rfc3339, parse_rfc3339, to_rfc3339

# The event.json setting (minutes; 0 or absent: off) under which two entries sharing a participant
# are a warning.
MIN_TURNAROUND = "min_turnaround_min"
IMPORT_REASON = "event import"


@dataclass
class Slot:
    """Where an entry is in the schedule: its session (None: the unscheduled pool), running order,
    time and scratch."""

    session_id: str | None
    order: int | None
    scheduled_at: str | None
    scratched: bool


@dataclass
class WalkOn:
    """A walk-on's own fields, until a publish inserts its row."""

    title: str
    category: str | None
    division: str | None
    level: str | None
    studio: str | None
    participants_enc: str | None


@dataclass
class Schedule:
    """The schedule of an event: each session's ``starts_at`` (in the event's order), each entry's
    slot, and the walk-ons not yet published."""

    sessions: dict[str, str | None]
    slots: dict[str, Slot]
    walk_ons: dict[str, WalkOn] = field(default_factory=dict)


@dataclass(frozen=True)
class Rules:
    """What a change is checked against: each session's panel, the judges who have a sheet of each
    entry, the locked sessions."""

    panels: dict[str, frozenset[str]]
    scorers: dict[str, frozenset[str]]
    locked: frozenset[str]


# -- reading ------------------------------------------------------------------------------------


def current_version(conn: sqlite3.Connection) -> int | None:
    """The current event's schedule version (1: as imported); None before the first import."""
    event_id = current_event_id(conn)
    if event_id is None:
        return None
    row = conn.execute(
        "SELECT max(version) FROM schedule_versions WHERE event_id = ?", (event_id,)
    ).fetchone()
    return int(row[0]) if row[0] is not None else 1


def load(conn: sqlite3.Connection, event_id: str) -> Schedule:
    """The schedule as the tables hold it now."""
    sessions = {
        row[0]: row[1]
        for row in conn.execute(
            "SELECT session_id, starts_at FROM sessions WHERE event_id = ? ORDER BY position", (event_id,)
        )
    }
    slots = {
        row[0]: Slot(row[1], row[2], row[3], bool(row[4]))
        for row in conn.execute(
            "SELECT entry_id, session_id, running_order, scheduled_at, scratched FROM entries"
            " WHERE event_id = ? ORDER BY entry_id",
            (event_id,),
        )
    }
    return Schedule(sessions, slots)


def rules(conn: sqlite3.Connection, event_id: str) -> Rules:
    panels: dict[str, set[str]] = {session_id: set() for session_id in load_session_ids(conn, event_id)}
    for session_id, judge_id in conn.execute(
        "SELECT session_id, judge_id FROM panels WHERE event_id = ?", (event_id,)
    ):
        panels.setdefault(session_id, set()).add(judge_id)
    scorers: dict[str, set[str]] = {}
    for entry_id, judge_id in conn.execute(
        "SELECT DISTINCT entry_id, judge_id FROM sheets WHERE event_id = ?", (event_id,)
    ):
        scorers.setdefault(entry_id, set()).add(judge_id)
    locked, _ = write_barriers(conn, event_id)
    return Rules(
        panels={k: frozenset(v) for k, v in panels.items()},
        scorers={k: frozenset(v) for k, v in scorers.items()},
        locked=locked,
    )


def load_session_ids(conn: sqlite3.Connection, event_id: str) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT session_id FROM sessions WHERE event_id = ? ORDER BY position", (event_id,)
        )
    ]


def draft(conn: sqlite3.Connection) -> DraftView:
    """The draft's changes in the order typed, and the version they follow."""
    event_id = require_event(conn)
    return DraftView(version=current_version(conn) or 1, changes=[c for c, _ in _draft_rows(conn, event_id)])


def versions(conn: sqlite3.Connection) -> list[ScheduleVersion]:
    """Every version of the current event's schedule, oldest first, version 1 (the import) included."""
    event_id = require_event(conn)
    rows = conn.execute(
        "SELECT version, at, actor, reason, changes, diff FROM schedule_versions WHERE event_id = ?"
        " ORDER BY version",
        (event_id,),
    ).fetchall()
    if not rows:
        imported_at = conn.execute(
            "SELECT imported_at FROM events WHERE event_id = ?", (event_id,)
        ).fetchone()[0]
        return [
            ScheduleVersion(
                version=1, at=imported_at, actor="import", reason=IMPORT_REASON, changes=[], diff=[]
            )
        ]
    return [
        ScheduleVersion(
            version=row[0],
            at=row[1],
            actor=row[2],
            reason=row[3],
            changes=msgspec.json.decode(row[4], type=list[ScheduleChange]),
            diff=msgspec.json.decode(row[5], type=list[DiffLine]),
        )
        for row in rows
    ]


# -- the rules of a change ----------------------------------------------------------------------


def apply(schedule: Schedule, rules: Rules, change: ScheduleChange, sealed: str | None = None) -> None:
    """Apply one change to ``schedule`` in place, or raise the domain error that refuses it (naming
    the entry or session) and leave ``schedule`` as it was."""
    work = copy.deepcopy(schedule)
    _apply(work, rules, change, sealed)
    schedule.sessions, schedule.slots, schedule.walk_ons = work.sessions, work.slots, work.walk_ons


def _apply(schedule: Schedule, rules: Rules, change: ScheduleChange, sealed: str | None) -> None:
    kind = change.kind
    if kind == "walk_on":
        _walk_on(schedule, rules, change, sealed)
        return
    if kind == "retime" and change.entry_id is None:
        session_id = _known_session(schedule, change.session_id)
        _not_locked(rules, session_id, f"session {session_id!r}")
        schedule.sessions[session_id] = change.scheduled_at
        return
    entry_id = change.entry_id or ""
    slot = schedule.slots.get(entry_id)
    if slot is None:
        raise NotFound(f"entry {entry_id!r}: no such entry in this event")
    _not_locked(rules, slot.session_id, f"entry {entry_id!r}")
    if kind == "scratch":
        if slot.scratched:
            raise ScheduleConflict(f"entry {entry_id!r} is already scratched")
        slot.scratched = True
    elif kind == "restore":
        if not slot.scratched:
            raise ScheduleConflict(f"entry {entry_id!r} is not scratched: nothing to restore")
        slot.scratched = False
    elif kind == "retime":
        slot.scheduled_at = change.scheduled_at
    elif kind == "move":
        target = _known_session(schedule, change.session_id)
        if target == slot.session_id and change.position is None:
            raise InvalidInput(
                f"entry {entry_id!r} is already in session {target!r}: say which position to move it to",
                [{"field": "position", "message": "required for a move within a session"}],
            )
        _not_locked(rules, target, f"entry {entry_id!r}")
        _panel_takes(rules, target, entry_id)
        _place(schedule, entry_id, target, change.position)
    else:
        raise InvalidInput(f"unknown change {kind!r}", [{"field": "kind", "message": "not a change"}])


def _walk_on(schedule: Schedule, rules: Rules, change: ScheduleChange, sealed: str | None) -> None:
    entry_id = change.entry_id or ""
    if not entry_id.strip():
        raise InvalidInput("a walk-on needs an entry id", [{"field": "entry_id", "message": "required"}])
    if not (change.title or "").strip():
        raise InvalidInput(f"walk-on {entry_id!r} needs a title", [{"field": "title", "message": "required"}])
    if entry_id in schedule.slots:
        raise ScheduleConflict(f"entry {entry_id!r} already exists in this event: a walk-on needs a new id")
    schedule.walk_ons[entry_id] = WalkOn(
        title=change.title or "",
        category=change.category,
        division=change.division,
        level=change.level,
        studio=change.studio,
        participants_enc=sealed,
    )
    schedule.slots[entry_id] = Slot(None, None, change.scheduled_at, False)
    if change.session_id is None:
        return  # the unscheduled pool
    target = _known_session(schedule, change.session_id)
    _not_locked(rules, target, f"walk-on {entry_id!r}")
    _panel_takes(rules, target, entry_id)
    _place(schedule, entry_id, target, change.position)


def _known_session(schedule: Schedule, session_id: str | None) -> str:
    if session_id is None or session_id not in schedule.sessions:
        raise NotFound(f"session {session_id!r}: no such session in this event")
    return session_id


def _not_locked(rules: Rules, session_id: str | None, what: str) -> None:
    if session_id is not None and session_id in rules.locked:
        raise SessionLocked(f"{what}: session {session_id!r} is locked, unlock it to change its schedule")


def _panel_takes(rules: Rules, session_id: str, entry_id: str) -> None:
    panel = rules.panels.get(session_id, frozenset())
    if not panel:
        raise ScheduleConflict(f"entry {entry_id!r}: session {session_id!r} has no judge on its panel")
    missing = sorted(rules.scorers.get(entry_id, frozenset()) - panel)
    if missing:
        raise ScheduleConflict(
            f"entry {entry_id!r}: judge(s) {', '.join(missing)} scored it and are not on session "
            f"{session_id!r}'s panel"
        )


def _place(schedule: Schedule, entry_id: str, session_id: str, position: int | None) -> None:
    """Put the entry at running ``position`` (1-based; None or past the end: last) of the session,
    renumbering the following entries' order only as far as needed to keep orders increasing."""
    if position is not None and position < 1:
        raise InvalidInput(
            f"entry {entry_id!r}: position must be 1 or more, got {position}",
            [{"field": "position", "message": "must be >= 1"}],
        )
    slot = schedule.slots[entry_id]
    others = sorted(
        (
            (s.order or 0, other)
            for other, s in schedule.slots.items()
            if s.session_id == session_id and other != entry_id
        ),
    )
    slot.session_id = session_id
    if position is None or position > len(others):
        slot.order = (others[-1][0] + 1) if others else 1
        return
    slot.order = others[position - 1][0]
    previous = slot.order
    for _, other in others[position - 1 :]:
        following = schedule.slots[other]
        if (following.order or 0) <= previous:
            following.order = previous + 1
        previous = following.order or 0


# -- validation ---------------------------------------------------------------------------------


def problems_of(
    schedule: Schedule, rules: Rules, participants: dict[str, list[str]], min_turnaround_min: float
) -> list[ScheduleProblem]:
    """Every problem of ``schedule``: duplicate running orders (errors), scratched entries with sheets
    and participants closer than ``min_turnaround_min`` minutes (warnings; 0: not checked).
    Participants are named masked (initials), never in full."""
    found: list[ScheduleProblem] = []
    by_order: dict[tuple[str, int], list[str]] = {}
    for entry_id, slot in schedule.slots.items():
        if slot.session_id is not None and slot.order is not None:
            by_order.setdefault((slot.session_id, slot.order), []).append(entry_id)
    for (session_id, order), entry_ids in sorted(by_order.items()):
        if len(entry_ids) > 1:
            found.append(
                ScheduleProblem(
                    severity="error",
                    code="duplicate-order",
                    message=f"session {session_id!r}: entries {', '.join(sorted(entry_ids))} share running"
                    f" order {order}",
                    entry_ids=sorted(entry_ids),
                    session_id=session_id,
                )
            )
    for entry_id, slot in sorted(schedule.slots.items()):
        judges = rules.scorers.get(entry_id)
        if slot.scratched and judges:
            found.append(
                ScheduleProblem(
                    severity="warning",
                    code="scratched-with-sheets",
                    message=f"entry {entry_id!r} is scratched and has sheets from {', '.join(sorted(judges))}"
                    " (kept, left out of results)",
                    entry_ids=[entry_id],
                    session_id=slot.session_id,
                )
            )
    if min_turnaround_min > 0:
        found.extend(_turnaround(schedule, participants, min_turnaround_min))
    return found


def _turnaround(
    schedule: Schedule, participants: dict[str, list[str]], min_turnaround_min: float
) -> list[ScheduleProblem]:
    times: dict[str, list[tuple[datetime, str]]] = {}
    shown: dict[str, str] = {}
    for entry_id, slot in schedule.slots.items():
        if slot.scratched or slot.session_id is None or slot.scheduled_at is None:
            continue
        at = parse_rfc3339(slot.scheduled_at)
        for name in participants.get(entry_id, []):
            who = " ".join(name.split()).casefold()
            shown.setdefault(who, personal.mask(name))
            times.setdefault(who, []).append((at, entry_id))
    found = []
    for who, slots in sorted(times.items()):
        slots.sort()
        for (first_at, first), (then_at, then) in itertools.pairwise(slots):
            gap = (then_at - first_at).total_seconds() / 60
            if gap < min_turnaround_min:
                found.append(
                    ScheduleProblem(
                        severity="warning",
                        code="turnaround",
                        message=f"entries {first!r} and {then!r} share participant {shown[who]} "
                        f"{gap:g} min apart (min_turnaround_min is {min_turnaround_min:g})",
                        entry_ids=[first, then],
                    )
                )
    return found


# -- the draft ----------------------------------------------------------------------------------


def add_change(
    conn: sqlite3.Connection,
    change: ScheduleChange,
    participants: str | None = None,
    key_path: Path | None = None,
) -> DraftView:
    """Type one change into the draft (inside the writer's transaction), or refuse it naming the
    entry or session (the draft unchanged). A walk-on's ``participants`` (names separated by ``;``)
    are sealed with the data key at ``key_path``."""
    event_id = require_event(conn)
    _ensure_base(conn, event_id)
    change = _checked(change)
    sealed = None
    if change.kind == "walk_on" and participants and participants.strip():
        if key_path is None:
            raise InvalidInput(
                "participants need the data key", [{"field": "participants", "message": "no key"}]
            )
        key = data_key.key_for(conn, key_path)
        sealed = personal.encrypt(
            key, "entries", "participants", f"{event_id}/{change.entry_id}", participants
        )
        count = len([n for n in participants.split(";") if n.strip()])
        change = msgspec.structs.replace(change, participants=count)
    # Checked against the schedule as the draft makes it (a change that no longer applies is
    # left out here, and named by validate).
    schedule, _ = _replayed(conn, event_id, _draft_rows(conn, event_id))
    apply(schedule, rules(conn, event_id), change, sealed)
    conn.execute(
        "INSERT INTO schedule_draft (event_id, change, sealed) VALUES (?, ?, ?)",
        (event_id, msgspec.json.encode(change).decode(), sealed),
    )
    return draft(conn)


def stamp(kind: str, actor: str, reason: str, **fields: Any) -> ScheduleChange:
    """A change stamped now by ``actor`` with ``reason``."""
    return ScheduleChange(kind=kind, actor=actor, at=now_rfc3339(), reason=reason, **fields)  # type: ignore[arg-type]


def discard(conn: sqlite3.Connection, actor: str, request_id: str | None = None) -> int:
    """Drop the draft; the number of changes dropped (audited when there were any)."""
    event_id = require_event(conn)
    dropped = conn.execute("DELETE FROM schedule_draft WHERE event_id = ?", (event_id,)).rowcount
    if dropped:
        audit.record(conn, actor, "schedule.discard", {"event_id": event_id, "changes": dropped}, request_id)
    return int(dropped)


def validate(conn: sqlite3.Connection, key_path: Path | None = None) -> Validation:
    """Every problem of the schedule as publishing the draft would make it, at once."""
    event_id = require_event(conn)
    rows = _draft_rows(conn, event_id)
    schedule, found = _replayed(conn, event_id, rows)
    found.extend(_problems(conn, event_id, schedule, rows, key_path))
    return Validation(
        version=current_version(conn) or 1,
        changes=len(rows),
        ok=not any(p.severity == "error" for p in found),
        problems=found,
    )


def publish(
    conn: sqlite3.Connection,
    actor: str,
    reason: str,
    key_path: Path | None = None,
    request_id: str | None = None,
) -> Published:
    """Apply the whole draft as the next version, in the caller's write transaction, or refuse and
    change nothing: while frozen, with an empty draft, or when ``validate`` finds an error."""
    reason = required_reason(reason, "a schedule change")
    _not_frozen(conn)
    event_id = require_event(conn)
    _ensure_base(conn, event_id)
    rows = _draft_rows(conn, event_id)
    if not rows:
        raise ScheduleConflict("the draft is empty: nothing to publish")
    schedule, found = _replayed(conn, event_id, rows)
    found.extend(_problems(conn, event_id, schedule, rows, key_path))
    errors = [p for p in found if p.severity == "error"]
    if errors:
        raise ScheduleConflict(
            f"publish refused, {len(errors)} problem(s): " + "; ".join(p.message for p in errors),
            problems=[p.message for p in errors],
        )
    before = load(conn, event_id)
    version = _write(conn, event_id, before, schedule, [c for c, _ in rows], actor, reason, request_id)
    conn.execute("DELETE FROM schedule_draft WHERE event_id = ?", (event_id,))
    return Published(version=version.version, diff=version.diff, warnings=found)


def rollback(
    conn: sqlite3.Connection,
    version: int,
    actor: str,
    reason: str,
    key_path: Path | None = None,
    request_id: str | None = None,
) -> Published:
    """Publish a copy of version ``version`` as the next version, warnings and all. Refused while
    frozen, while the draft holds changes, and when it would change a locked session. Entries the
    old version did not have (later walk-ons) go to the unscheduled pool, with their sheets."""
    reason = required_reason(reason, "a schedule change")
    _not_frozen(conn)
    event_id = require_event(conn)
    _ensure_base(conn, event_id)
    if _draft_rows(conn, event_id):
        raise ScheduleConflict("the draft holds changes: publish or discard them before a rollback")
    row = conn.execute(
        "SELECT snapshot FROM schedule_versions WHERE event_id = ? AND version = ?", (event_id, version)
    ).fetchone()
    if row is None:
        raise NotFound(f"schedule version {version}: no such version of event {event_id!r}")
    before = load(conn, event_id)
    after = _from_snapshot(before, json.loads(row[0]))
    the_rules = rules(conn, event_id)
    for entry_id, slot in sorted(after.slots.items()):
        was = before.slots[entry_id]
        if was != slot:
            for session_id in {was.session_id, slot.session_id}:
                _not_locked(the_rules, session_id, f"entry {entry_id!r}")
    for session_id, starts_at in after.sessions.items():
        if before.sessions.get(session_id) != starts_at:
            _not_locked(the_rules, session_id, f"session {session_id!r}")
    typed = stamp("rollback", actor, reason, version=version)
    published = _write(conn, event_id, before, after, [typed], actor, reason, request_id)
    warnings = [p for p in _problems(conn, event_id, after, [], key_path) if p.severity == "warning"]
    return Published(version=published.version, diff=published.diff, warnings=warnings)


def after_import(conn: sqlite3.Connection, event_id: str, actor: str, replaced: bool) -> None:
    """Called by the event import in its transaction: a package that replaced the setup starts the
    versions over (version 1 is this import); one merged into a scored event is the next version.
    Either way the draft, typed against the old schedule, is dropped."""
    conn.execute("DELETE FROM schedule_draft WHERE event_id = ?", (event_id,))
    if replaced:
        conn.execute("DELETE FROM schedule_versions WHERE event_id = ?", (event_id,))
    if not _ensure_base(conn, event_id, actor):
        previous = _latest_snapshot(conn, event_id)
        after = load(conn, event_id)
        _insert_version(conn, event_id, actor, IMPORT_REASON, [], _diff(previous, after), after)


# -- inside -------------------------------------------------------------------------------------


def _checked(change: ScheduleChange) -> ScheduleChange:
    if change.scheduled_at is not None:
        try:
            # Stored in UTC, as the import stores the package's times.
            at = to_rfc3339(parse_rfc3339(change.scheduled_at))
        except ValueError as exc:
            raise InvalidInput(
                f"scheduled_at {change.scheduled_at!r}: {exc}",
                [{"field": "scheduled_at", "message": str(exc)}],
            ) from None
        change = msgspec.structs.replace(change, scheduled_at=at)
    if change.kind == "retime" and change.scheduled_at is None:
        raise InvalidInput("a retime needs the new time", [{"field": "scheduled_at", "message": "required"}])
    if change.kind == "retime" and (change.entry_id is None) == (change.session_id is None):
        raise InvalidInput(
            "a retime names an entry or a session, one of the two",
            [{"field": "entry_id", "message": "an entry or a session"}],
        )
    return msgspec.structs.replace(change, reason=required_reason(change.reason, "a schedule change"))


def _draft_rows(conn: sqlite3.Connection, event_id: str) -> list[tuple[ScheduleChange, str | None]]:
    return [
        (msgspec.json.decode(row[0], type=ScheduleChange), row[1])
        for row in conn.execute(
            "SELECT change, sealed FROM schedule_draft WHERE event_id = ? ORDER BY seq", (event_id,)
        )
    ]


def _replayed(
    conn: sqlite3.Connection, event_id: str, rows: list[tuple[ScheduleChange, str | None]]
) -> tuple[Schedule, list[ScheduleProblem]]:
    """The schedule with the draft applied; each change that no longer applies (the session was
    locked since, say) is an error and is left out."""
    schedule = load(conn, event_id)
    the_rules = rules(conn, event_id)
    found = []
    for number, (typed, sealed) in enumerate(rows, 1):
        try:
            apply(schedule, the_rules, typed, sealed)
        except (NotFound, SessionLocked, ScheduleConflict, InvalidInput) as exc:
            found.append(
                ScheduleProblem(
                    severity="error",
                    code="refused-change",
                    message=f"change {number} ({typed.kind}): {exc.detail}",
                    entry_ids=[typed.entry_id] if typed.entry_id else [],
                    session_id=typed.session_id,
                )
            )
    return schedule, found


def _problems(
    conn: sqlite3.Connection,
    event_id: str,
    schedule: Schedule,
    rows: list[tuple[ScheduleChange, str | None]],
    key_path: Path | None,
) -> list[ScheduleProblem]:
    minutes = _min_turnaround(conn, event_id)
    names: dict[str, list[str]] = {}
    if minutes > 0 and key_path is not None:
        names = data_key.call_with_key(conn, key_path, lambda c, key: _participants(c, event_id, key, rows))
    return problems_of(schedule, rules(conn, event_id), names, minutes)


def turnaround_warnings(conn: sqlite3.Connection, event_id: str, key: bytes) -> list[ScheduleProblem]:
    """The ``min_turnaround_min`` warnings of the schedule as the tables hold it, the participants
    opened with the data ``key``: what the event import lists (the same check as ``validate``'s)."""
    minutes = _min_turnaround(conn, event_id)
    if minutes <= 0:
        return []
    return _turnaround(load(conn, event_id), _participants(conn, event_id, key, []), minutes)


def _participants(
    conn: sqlite3.Connection, event_id: str, key: bytes, rows: list[tuple[ScheduleChange, str | None]]
) -> dict[str, list[str]]:
    """Each entry's participants' names, the stored entries' and the draft's walk-ons' (``rows``)."""
    sealed = {
        row[0]: row[1]
        for row in conn.execute(
            "SELECT entry_id, participants_enc FROM entries"
            " WHERE event_id = ? AND participants_enc IS NOT NULL",
            (event_id,),
        )
    }
    sealed.update({typed.entry_id: s for typed, s in rows if typed.entry_id and s})
    return {
        entry_id: personal_fields.participant_names(key, event_id, entry_id, token)
        for entry_id, token in sealed.items()
    }


def _min_turnaround(conn: sqlite3.Connection, event_id: str) -> float:
    value = personal_fields.event_options(conn, event_id).get(MIN_TURNAROUND) or 0
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0


def _snapshot(schedule: Schedule) -> dict[str, Any]:
    return {
        "sessions": schedule.sessions,
        "entries": {
            entry_id: [s.session_id, s.order, s.scheduled_at, s.scratched]
            for entry_id, s in sorted(schedule.slots.items())
        },
    }


def _from_snapshot(current: Schedule, snapshot: dict[str, Any]) -> Schedule:
    slots = {
        entry_id: Slot(None, None, slot.scheduled_at, slot.scratched)
        for entry_id, slot in current.slots.items()
    }
    for entry_id, (session_id, order, scheduled_at, scratched) in snapshot["entries"].items():
        if entry_id in slots:
            slots[entry_id] = Slot(session_id, order, scheduled_at, bool(scratched))
    sessions = dict(current.sessions)
    sessions.update({k: v for k, v in snapshot["sessions"].items() if k in sessions})
    return Schedule(sessions, slots)


def _latest_snapshot(conn: sqlite3.Connection, event_id: str) -> Schedule:
    row = conn.execute(
        "SELECT snapshot FROM schedule_versions WHERE event_id = ? ORDER BY version DESC LIMIT 1", (event_id,)
    ).fetchone()
    data = json.loads(row[0])
    return Schedule(
        dict(data["sessions"]),
        {e: Slot(s, o, at, bool(x)) for e, (s, o, at, x) in data["entries"].items()},
    )


def _ensure_base(conn: sqlite3.Connection, event_id: str, actor: str = "import") -> bool:
    """Write version 1 (the schedule as imported) when the event has no version yet; True if it did."""
    held = conn.execute("SELECT 1 FROM schedule_versions WHERE event_id = ? LIMIT 1", (event_id,)).fetchone()
    if held is not None:
        return False
    _insert_version(conn, event_id, actor, IMPORT_REASON, [], [], load(conn, event_id))
    return True


def _insert_version(
    conn: sqlite3.Connection,
    event_id: str,
    actor: str,
    reason: str,
    changes: list[ScheduleChange],
    diff: list[DiffLine],
    schedule: Schedule,
) -> ScheduleVersion:
    row = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM schedule_versions WHERE event_id = ?", (event_id,)
    ).fetchone()
    version = ScheduleVersion(
        version=int(row[0]), at=now_rfc3339(), actor=actor, reason=reason, changes=changes, diff=diff
    )
    conn.execute(
        "INSERT INTO schedule_versions (event_id, version, at, actor, reason, changes, diff, snapshot)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event_id,
            version.version,
            version.at,
            actor,
            reason,
            msgspec.json.encode(changes).decode(),
            msgspec.json.encode(diff).decode(),
            json.dumps(_snapshot(schedule), sort_keys=True),
        ),
    )
    return version


def _write(
    conn: sqlite3.Connection,
    event_id: str,
    before: Schedule,
    after: Schedule,
    changes: list[ScheduleChange],
    actor: str,
    reason: str,
    request_id: str | None,
) -> ScheduleVersion:
    """Make the tables hold ``after``, record it as the next version and audit it with its diff."""
    for entry_id, walk_on in after.walk_ons.items():
        slot = after.slots[entry_id]
        conn.execute(
            "INSERT INTO entries (event_id, entry_id, session_id, running_order, scheduled_at, title,"
            " category, division, level, studio, participants_enc, scratched)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                entry_id,
                slot.session_id,
                slot.order,
                slot.scheduled_at,
                walk_on.title,
                walk_on.category,
                walk_on.division,
                walk_on.level,
                walk_on.studio,
                walk_on.participants_enc,
                int(slot.scratched),
            ),
        )
    for entry_id, slot in after.slots.items():
        if entry_id in after.walk_ons or before.slots.get(entry_id) == slot:
            continue
        conn.execute(
            "UPDATE entries SET session_id = ?, running_order = ?, scheduled_at = ?, scratched = ?"
            " WHERE event_id = ? AND entry_id = ?",
            (slot.session_id, slot.order, slot.scheduled_at, int(slot.scratched), event_id, entry_id),
        )
    for session_id, starts_at in after.sessions.items():
        if before.sessions.get(session_id) != starts_at:
            conn.execute(
                "UPDATE sessions SET starts_at = ? WHERE event_id = ? AND session_id = ?",
                (starts_at, event_id, session_id),
            )
    diff = _diff(before, after)
    version = _insert_version(conn, event_id, actor, reason, changes, diff, after)
    audit.record(
        conn,
        actor,
        "schedule.publish",
        {
            "event_id": event_id,
            "version": version.version,
            "reason": reason,
            "changes": msgspec.to_builtins(changes),
            "diff": msgspec.to_builtins(diff),
        },
        request_id,
    )
    return version


def _place_text(slot: Slot | None) -> str | None:
    if slot is None:
        return None
    return "unscheduled" if slot.session_id is None else f"{slot.session_id} #{slot.order}"


def _diff(before: Schedule, after: Schedule) -> list[DiffLine]:
    lines: list[DiffLine] = []
    yes_no: Callable[[bool], str] = lambda flag: "yes" if flag else "no"  # noqa: E731
    for entry_id, slot in sorted(after.slots.items()):
        was = before.slots.get(entry_id)
        if was is None:
            lines.append(DiffLine(field="added", entry_id=entry_id, before=None, after=_place_text(slot)))
            continue
        if was.scratched != slot.scratched:
            lines.append(
                DiffLine(
                    field="scratched",
                    entry_id=entry_id,
                    before=yes_no(was.scratched),
                    after=yes_no(slot.scratched),
                )
            )
        if (was.session_id, was.order) != (slot.session_id, slot.order):
            lines.append(
                DiffLine(field="place", entry_id=entry_id, before=_place_text(was), after=_place_text(slot))
            )
        if was.scheduled_at != slot.scheduled_at:
            lines.append(
                DiffLine(
                    field="scheduled_at", entry_id=entry_id, before=was.scheduled_at, after=slot.scheduled_at
                )
            )
    for session_id, starts_at in after.sessions.items():
        if session_id in before.sessions and before.sessions[session_id] != starts_at:
            lines.append(
                DiffLine(
                    field="starts_at",
                    session_id=session_id,
                    before=before.sessions[session_id],
                    after=starts_at,
                )
            )
    return lines


def _not_frozen(conn: sqlite3.Connection) -> None:
    """A freeze locks the schedule: nothing is published until a tech unfreezes the box."""
    try:
        ensure_not_frozen(conn)
    except Frozen as exc:
        raise Frozen(
            f"the box is frozen ({exc.detail}): schedule publishing refused until a tech unfreezes it"
        ) from None
