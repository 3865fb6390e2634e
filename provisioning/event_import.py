"""Event packages into the box: ``load_package`` reads and checks a folder or a .zip (event.json,
entries.csv, judges.csv), and ``import_package`` applies it inside the caller's write transaction.

The format and its rules are the event package's (``appliance/core/event_package``, EVENT_PACKAGE.md).
Loading never touches the database: ``load_package`` either returns a fully checked ``Package`` or
raises ``PackageInvalid`` listing every problem as ``file:line: message``. ``import_package`` then
applies it in one transaction:

* before the event has any score sheet, the package replaces the event's setup entirely;
* once a sheet exists, the import adds and updates but never removes or renumbers a scored entry,
  never removes a judge who has sheets and never changes the criteria; what it kept is reported in
  ``ImportReport.refused``.

Either way the imported schedule's warnings are listed in ``ImportReport.warnings``, never blocking:
two entries sharing a participant closer than event.json's ``min_turnaround_min`` (the check
``venuebox schedule validate`` makes, ``appliance/core/schedule.py``), participants named by initials.

Participants' names are personal data, and so are the values of the entries.csv columns event.json
lists in ``personal_columns``: they leave this module only as ``personal.encrypt`` ciphertext (one
per field), never in extras, messages or the audit log.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from appliance.core import audit, personal, personal_fields, schedule
from appliance.core.box import ensure_not_frozen, get_box
from appliance.core.event_package.format import (
    ENTRIES_FILE,
    EVENT_FILE,
    JUDGES_FILE,
    PERSONAL_COLUMNS,
    Criterion,
    Entry,
    Judge,
    Package,
    Problems,
    Session,
    plain_number,
)
from appliance.core.event_package.reading import read_files, snapshot_id
from appliance.core.event_package.validate import check_entries, check_event, check_judges
from appliance.shared.canonical import canonical_json
from appliance.shared.errors import DomainError, Frozen
from appliance.shared.times import now_rfc3339


class PackageInvalid(DomainError):
    """The package breaks the format's rules; ``problems`` lists every one as ``file:line: message``."""

    def __init__(self, problems: list[str]) -> None:
        count = len(problems)
        noun, them = ("problem", "it") if count == 1 else ("problems", "them")
        super().__init__(
            f"event package has {count} {noun}; nothing was imported: fix {them} and import again",
            problems=list(problems),
        )
        self.problems = list(problems)


class ImportRefused(DomainError):
    """The import would take an event that is being scored off the box."""


@dataclass
class ImportReport:
    """What an import did: the table counts after it, and one line per session, entry, judge or
    criterion it added, removed or refused to change."""

    event_id: str
    snapshot_id: str
    counts: dict[str, int]
    added: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    replaced: bool = False
    # Unscored entries, judges and sessions the package dropped after scoring had started.
    removed: list[str] = field(default_factory=list)
    # The schedule's warnings (min_turnaround_min), never blocking; participants named by initials.
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_package(path: Path) -> Package:
    """Read and check an event package (a folder, or a .zip of one with the files at its root or
    in a single top-level folder). Raises ``PackageInvalid`` listing every problem at once."""
    path = Path(path)
    problems = Problems()
    files = read_files(path, problems)
    event = check_event(files.get(EVENT_FILE), problems)
    entries, personal = check_entries(
        files.get(ENTRIES_FILE), event.session_ids, problems, event.personal_columns, event.scoring_fields
    )
    judges = check_judges(files.get(JUDGES_FILE), event.session_ids, problems)
    if problems:
        raise PackageInvalid(problems.lines())
    if PERSONAL_COLUMNS in event.extra:
        # Stored as entries.csv names them: the fields the admin API lists and reveals.
        event.extra[PERSONAL_COLUMNS] = personal
    return Package(
        event_id=event.event_id,
        name=event.name,
        timezone=event.timezone,
        snapshot_id=snapshot_id(files),
        criteria=tuple(event.criteria),
        sessions=tuple(event.sessions),
        entries=tuple(entries),
        judges=tuple(judges),
        extra=event.extra,
        source=path.name,
    )


# -- importing ----------------------------------------------------------------------------------


def import_package(
    conn: sqlite3.Connection,
    package: Package,
    data_key: bytes,
    actor: str,
    request_id: str | None = None,
) -> ImportReport:
    """Apply a checked package inside the caller's write transaction (``store.write_sync``).

    Before the event has sheets, its setup is replaced; after, the import only adds and updates
    (see the module docstring) and reports what it kept. Raises ``Frozen`` while the box is frozen
    and ``ImportRefused`` when another event that has sheets is on the box."""
    try:
        ensure_not_frozen(conn)
    except Frozen as exc:
        raise Frozen(f"the box is frozen ({exc.detail}): imports refused until a tech unfreezes it") from None
    event_id = package.event_id
    current = get_box(conn)["event_id"]
    if current and current != event_id:
        scored = _sheet_count(conn, current)
        if scored:
            raise ImportRefused(
                f"this box holds event {current!r} with {scored} score sheet(s); importing {event_id!r} "
                f"would take it off the box. Import a package of {current!r}, or set up another box "
                f"for {event_id!r}"
            )
    _upsert_event(conn, package)
    replaced = not _sheet_count(conn, event_id)
    report = ImportReport(event_id, package.snapshot_id, {}, replaced=replaced)
    if replaced:
        _replace_setup(conn, package, data_key)
    else:
        _merge_setup(conn, package, data_key, report)
    conn.execute("UPDATE box SET event_id = ? WHERE id = 1", (event_id,))
    schedule.after_import(conn, event_id, actor, replaced)
    report.warnings = [p.message for p in schedule.turnaround_warnings(conn, event_id, data_key)]
    report.counts = {
        table: conn.execute(f"SELECT count(*) FROM {table} WHERE event_id = ?", (event_id,)).fetchone()[0]
        for table in ("sessions", "entries", "judges", "criteria")
    }
    audit.record(
        conn,
        actor,
        "event.import",
        {
            "event_id": event_id,
            "snapshot_id": package.snapshot_id,
            "source": package.source,
            "replaced": replaced,
            **report.counts,
            "added": report.added,
            "removed": report.removed,
            "refused": report.refused,
        },
        request_id,
    )
    return report


def _sheet_count(conn: sqlite3.Connection, event_id: str) -> int:
    return conn.execute("SELECT count(*) FROM sheets WHERE event_id = ?", (event_id,)).fetchone()[0]


def _upsert_event(conn: sqlite3.Connection, package: Package) -> None:
    conn.execute(
        "INSERT INTO events (event_id, name, timezone, snapshot_id, imported_at, extra) "
        "VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (event_id) DO UPDATE SET name = excluded.name, timezone = excluded.timezone, "
        "snapshot_id = excluded.snapshot_id, imported_at = excluded.imported_at, extra = excluded.extra",
        (
            package.event_id,
            package.name,
            package.timezone,
            package.snapshot_id,
            now_rfc3339(),
            canonical_json(package.extra),
        ),
    )


def _replace_setup(conn: sqlite3.Connection, package: Package, data_key: bytes) -> None:
    event_id = package.event_id
    # Children before parents: the foreign keys are checked statement by statement.
    for table in ("panels", "entries", "judges", "sessions", "criteria"):
        conn.execute(f"DELETE FROM {table} WHERE event_id = ?", (event_id,))
    for position, criterion in enumerate(package.criteria, 1):
        _insert_criterion(conn, event_id, criterion, position)
    for position, session in enumerate(package.sessions, 1):
        _upsert_session(conn, event_id, session, position)
    for entry in package.entries:
        _upsert_entry(conn, event_id, entry, entry.session_id, entry.order, data_key)
    all_ids = [s.session_id for s in package.sessions]
    for judge in package.judges:
        _upsert_judge(conn, event_id, judge)
        for session_id in all_ids if judge.all_sessions else judge.sessions:
            conn.execute(
                "INSERT INTO panels (event_id, judge_id, session_id) VALUES (?, ?, ?)",
                (event_id, judge.judge_id, session_id),
            )


def _insert_criterion(conn: sqlite3.Connection, event_id: str, criterion: Criterion, position: int) -> None:
    conn.execute(
        "INSERT INTO criteria (event_id, key, label, min, max, step, position, extra) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event_id,
            criterion.key,
            criterion.label,
            float(criterion.min),
            float(criterion.max),
            float(criterion.step),
            position,
            canonical_json(criterion.extra),
        ),
    )


def _upsert_session(conn: sqlite3.Connection, event_id: str, session: Session, position: int) -> None:
    conn.execute(
        "INSERT INTO sessions (event_id, session_id, name, stage, starts_at, position, extra) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, session_id) DO UPDATE SET name = excluded.name, "
        "stage = excluded.stage, starts_at = excluded.starts_at, position = excluded.position, "
        "extra = excluded.extra",
        (
            event_id,
            session.session_id,
            session.name,
            session.stage,
            session.starts_at,
            position,
            canonical_json(session.extra),
        ),
    )


def _upsert_entry(
    conn: sqlite3.Connection, event_id: str, entry: Entry, session_id: str, order: int, data_key: bytes
) -> None:
    participants = None
    if entry.participants:
        participants = personal.encrypt(
            data_key, "entries", "participants", f"{event_id}/{entry.entry_id}", entry.participants
        )
    conn.execute(
        "INSERT INTO entries (event_id, entry_id, session_id, running_order, scheduled_at, title, category, "
        "division, level, studio, participants_enc, personal_enc, extra) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (event_id, entry_id) DO UPDATE SET session_id = excluded.session_id, "
        "running_order = excluded.running_order, scheduled_at = excluded.scheduled_at, "
        "title = excluded.title, "
        "category = excluded.category, division = excluded.division, level = excluded.level, "
        "studio = excluded.studio, participants_enc = excluded.participants_enc, "
        "personal_enc = excluded.personal_enc, extra = excluded.extra",
        (
            event_id,
            entry.entry_id,
            session_id,
            order,
            entry.scheduled_at,
            entry.title,
            entry.category,
            entry.division,
            entry.level,
            entry.studio,
            participants,
            personal_fields.seal_fields(data_key, event_id, entry.entry_id, entry.personal),
            canonical_json(entry.extra),
        ),
    )


def _upsert_judge(conn: sqlite3.Connection, event_id: str, judge: Judge) -> None:
    conn.execute(
        "INSERT INTO judges (event_id, judge_id, name, all_sessions, extra) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (event_id, judge_id) DO UPDATE SET name = excluded.name, "
        "all_sessions = excluded.all_sessions, extra = excluded.extra",
        (event_id, judge.judge_id, judge.name, int(judge.all_sessions), canonical_json(judge.extra)),
    )


@dataclass
class _Placement:
    """Where an entry ends up after a merge: the package's entry (or None to keep the stored row)."""

    entry: Entry | None
    session_id: str
    order: int
    pinned: bool = False


def _merge_setup(conn: sqlite3.Connection, package: Package, data_key: bytes, report: ImportReport) -> None:
    event_id = package.event_id
    refused, added, removed = report.refused, report.added, report.removed

    def rows(sql: str) -> list[sqlite3.Row]:
        return conn.execute(sql, (event_id,)).fetchall()

    stored_entries = {r["entry_id"]: r for r in rows("SELECT * FROM entries WHERE event_id = ?")}
    stored_sessions = {
        r["session_id"]: r for r in rows("SELECT * FROM sessions WHERE event_id = ? ORDER BY position")
    }
    stored_judges = {r["judge_id"]: r for r in rows("SELECT * FROM judges WHERE event_id = ?")}
    stored_criteria = {
        r["key"]: r for r in rows("SELECT * FROM criteria WHERE event_id = ? ORDER BY position")
    }
    stored_panels = {(r[0], r[1]) for r in rows("SELECT judge_id, session_id FROM panels WHERE event_id = ?")}
    scored_entries = {r[0] for r in rows("SELECT DISTINCT entry_id FROM sheets WHERE event_id = ?")}
    # (judge, session) pairs with sheets: a judge keeps their seat where they have already scored.
    scored_seats = {
        (r[0], r[1])
        for r in rows(
            "SELECT DISTINCT s.judge_id, e.session_id FROM sheets s JOIN entries e "
            "ON e.event_id = s.event_id AND e.entry_id = s.entry_id WHERE s.event_id = ?"
        )
    }
    scored_judges = {r[0] for r in rows("SELECT DISTINCT judge_id FROM sheets WHERE event_id = ?")}

    # Criteria: the sheets were scored against them, so only labels and display order may change.
    for position, criterion in enumerate(package.criteria, 1):
        old = stored_criteria.get(criterion.key)
        if old is None:
            refused.append(
                f"criterion {criterion.key}: not added (scoring has started, criteria cannot change)"
            )
            continue
        was = tuple(Decimal(str(old[k])) for k in ("min", "max", "step"))
        wants = (criterion.min, criterion.max, criterion.step)
        if was != wants:
            refused.append(
                f"criterion {criterion.key}: kept min {plain_number(was[0])}, "
                f"max {plain_number(was[1])}, step {plain_number(was[2])} "
                f"(scoring has started; the package has min {plain_number(wants[0])}, "
                f"max {plain_number(wants[1])}, step {plain_number(wants[2])})"
            )
        conn.execute(
            "UPDATE criteria SET label = ?, position = ?, extra = ? WHERE event_id = ? AND key = ?",
            (criterion.label, position, canonical_json(criterion.extra), event_id, criterion.key),
        )
    wanted_keys = {c.key for c in package.criteria}
    position = len(package.criteria)
    for key in stored_criteria:
        if key not in wanted_keys:
            position += 1
            refused.append(f"criterion {key}: kept (scoring has started; the package removes it)")
            conn.execute(
                "UPDATE criteria SET position = ? WHERE event_id = ? AND key = ?", (position, event_id, key)
            )

    # Entries: scored ones keep their session and running order whatever the package says.
    plan = {e.entry_id: _Placement(e, e.session_id, e.order) for e in package.entries}
    for entry_id in sorted(scored_entries):
        old = stored_entries.get(entry_id)
        if old is None:
            continue
        slot = (old["session_id"], old["running_order"])
        placed = plan.get(entry_id)
        if placed is None:
            plan[entry_id] = _Placement(None, *slot, pinned=True)
            refused.append(f'entry {entry_id} "{old["title"]}": kept (it has sheets; the package removes it)')
            continue
        if (placed.session_id, placed.order) != slot:
            refused.append(
                f'entry {entry_id} "{old["title"]}": kept in {slot[0]} at order {slot[1]} (it has sheets; '
                f"the package moves it to {placed.session_id} order {placed.order})"
            )
            placed.session_id, placed.order = slot
        placed.pinned = True
    _resolve_slot_clashes(plan, stored_entries, refused)

    # Sessions: the package's, plus stored ones that still hold entries the box keeps.
    for position, session in enumerate(package.sessions, 1):
        if session.session_id not in stored_sessions:
            added.append(f"session {session.session_id} ({session.name})")
        _upsert_session(conn, event_id, session, position)
    wanted_sessions = [s.session_id for s in package.sessions]
    needed = {p.session_id for p in plan.values()} | {s for _, s in scored_seats}
    kept_sessions = [s for s in stored_sessions if s not in wanted_sessions and s in needed]
    for offset, session_id in enumerate(kept_sessions, len(wanted_sessions) + 1):
        refused.append(
            f"session {session_id}: kept (it still holds entries that have sheets or sit in "
            "their slots; the package removes it)"
        )
        conn.execute(
            "UPDATE sessions SET position = ? WHERE event_id = ? AND session_id = ?",
            (offset, event_id, session_id),
        )
    final_sessions = wanted_sessions + kept_sessions

    # Panels are rebuilt below; drop them first so sessions and judges can go.
    conn.execute("DELETE FROM panels WHERE event_id = ?", (event_id,))
    for entry_id, old in stored_entries.items():
        if entry_id not in plan:
            removed.append(f'entry {entry_id} "{old["title"]}"')
            conn.execute("DELETE FROM entries WHERE event_id = ? AND entry_id = ?", (event_id, entry_id))
    for entry_id, placed in plan.items():
        if placed.entry is None:
            continue
        if entry_id not in stored_entries:
            added.append(
                f'entry {entry_id} "{placed.entry.title}" in {placed.session_id} at order {placed.order}'
            )
        _upsert_entry(conn, event_id, placed.entry, placed.session_id, placed.order, data_key)

    # Judges: the package's, plus stored ones who have sheets.
    panels: set[tuple[str, str]] = set()
    for judge in package.judges:
        if judge.judge_id not in stored_judges:
            added.append(f"judge {judge.judge_id} ({judge.name})")
        _upsert_judge(conn, event_id, judge)
        seats = set(final_sessions if judge.all_sessions else judge.sessions)
        for seat_judge, session_id in sorted(scored_seats):
            if seat_judge == judge.judge_id and session_id not in seats:
                refused.append(
                    f"judge {judge.judge_id}: kept on session {session_id} (they have sheets there; "
                    "the package takes them off it)"
                )
                seats.add(session_id)
        panels |= {(judge.judge_id, s) for s in seats}
    wanted_judges = {j.judge_id for j in package.judges}
    for judge_id, old in stored_judges.items():
        if judge_id in wanted_judges:
            continue
        if judge_id in scored_judges:
            refused.append(
                f"judge {judge_id} ({old['name']}): kept (they have sheets; the package removes them)"
            )
            seats = (
                set(final_sessions) if old["all_sessions"] else {s for j, s in stored_panels if j == judge_id}
            )
            seats |= {s for j, s in scored_seats if j == judge_id}
            panels |= {(judge_id, s) for s in seats if s in final_sessions}
        else:
            removed.append(f"judge {judge_id} ({old['name']})")
            conn.execute("DELETE FROM judges WHERE event_id = ? AND judge_id = ?", (event_id, judge_id))
    conn.executemany(
        "INSERT INTO panels (event_id, judge_id, session_id) VALUES (?, ?, ?)",
        [(event_id, j, s) for j, s in sorted(panels)],
    )

    for session_id, old in stored_sessions.items():
        if session_id not in final_sessions:
            removed.append(f"session {session_id} ({old['name']})")
            conn.execute("DELETE FROM sessions WHERE event_id = ? AND session_id = ?", (event_id, session_id))


def _resolve_slot_clashes(
    plan: dict[str, _Placement], stored: dict[str, sqlite3.Row], refused: list[str]
) -> None:
    """An entry whose slot (session, order) is held by a pinned entry keeps its stored slot (pinned
    in turn, which may displace another) or, if it is new, is not added. Two entries never share a
    slot. Ends because each pass pins or drops one entry that was not pinned."""
    while True:
        holders = {(p.session_id, p.order): entry_id for entry_id, p in plan.items() if p.pinned}
        clash = next(
            (
                (entry_id, p)
                for entry_id, p in sorted(plan.items())
                if not p.pinned and (p.session_id, p.order) in holders
            ),
            None,
        )
        if clash is None:
            return
        entry_id, placed = clash
        holder = holders[(placed.session_id, placed.order)]
        old = stored.get(entry_id)
        if old is None:
            del plan[entry_id]
            refused.append(
                f"entry {entry_id}: not added ({placed.session_id} order {placed.order} stays with "
                f"entry {holder}, which has sheets or sat there before)"
            )
        else:
            refused.append(
                f"entry {entry_id}: kept in {old['session_id']} at order {old['running_order']} "
                f"({placed.session_id} order {placed.order} stays with entry {holder}, which has sheets "
                "or sat there before)"
            )
            placed.session_id, placed.order, placed.pinned = old["session_id"], old["running_order"], True
