"""Read views of scoring progress, for the venue console: how far each session is, which entries
still miss a judge's sheet, the entries x judges grid, the live sheet feed and an entry's
correction chains.

Every function is a read of the current event (``store.read(lambda conn: ...)``); none returns
participants (personal data). Judges are on a session's panel when they have a ``panels`` row for
it: the event import writes one for every session for a judge listed with ``*`` (all sessions),
and the ledger refuses sheets by the same rows, so "panel" means here what it means to a tablet.

Per entry, the *scored* judges are those with any sheet for it. An entry is **complete** when every
panel judge has scored it, **partial** when some have, **not started** when none has. It is
**missing** when partial, or when not started although a later entry of its session (higher
running order) has a sheet: the panel moved on without it ("skipped").
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

import msgspec

from appliance.core.box import current_event_id
from appliance.shared.admin_wire import (
    ChainSheet,
    EntryChains,
    EntryDetail,
    FeedSheet,
    GridCell,
    GridEntry,
    JudgeChain,
    SessionGrid,
    SessionHead,
    SessionOverview,
    SheetFeed,
)
from appliance.shared.errors import NotFound
from appliance.shared.status import ChosenBy, Judge, MissingEntry, SessionProgress
from appliance.shared.times import parse_rfc3339

MISSING_LIST_MAX = 50
FEED_LIMIT_DEFAULT = 50
FEED_LIMIT_MAX = 500

EntryState = Literal["complete", "partial", "not_started"]


@dataclass(slots=True)
class EntryScores:
    """One entry as the progress views need it, with its sheet count per judge."""

    entry: EntryDetail
    sheets: dict[str, int] = field(default_factory=dict)  # judge_id -> sheets (1 + corrections)


@dataclass(slots=True)
class Classified:
    """Counts of a session's entries by state, and its missing entries (all of them, in running order)."""

    entries: int
    complete: int
    partial: int
    not_started: int
    missing: list[MissingEntry]


def entry_detail(row: sqlite3.Row) -> EntryDetail:
    """An ``entries`` row (``running_order`` as ``order``) as the admin API shows it."""
    return EntryDetail(
        entry_id=row["entry_id"],
        session_id=row["session_id"],
        order=row["running_order"],
        title=row["title"],
        category=row["category"],
        division=row["division"],
        level=row["level"],
        studio=row["studio"],
    )


def sheet_total(values: dict[str, float]) -> float:
    """The sum of a sheet's values, added in decimal so 9.4 + 9.1 + 8.5 is 27.0, not 26.999999999999996."""
    return float(sum((Decimal(repr(float(v))) for v in values.values()), Decimal(0)))


def entry_state(scores: EntryScores, panel_ids: list[str]) -> EntryState:
    """'complete', 'partial' or 'not_started' (a session without panel judges completes nothing)."""
    if not scores.sheets:
        return "not_started"
    if panel_ids and all(judge_id in scores.sheets for judge_id in panel_ids):
        return "complete"
    return "partial"


def classify(entries: list[EntryScores], panel: list[Judge]) -> Classified:
    """Counts of a session's entries (in running order) and its missing ones, all of them."""
    panel_ids = [judge.id for judge in panel]
    states = [entry_state(scores, panel_ids) for scores in entries]
    last_started = max((scores.entry.order for scores in entries if scores.sheets), default=None)
    counts = {"complete": 0, "partial": 0, "not_started": 0}
    missing: list[MissingEntry] = []
    for scores, state in zip(entries, states, strict=True):
        counts[state] += 1
        entry = scores.entry
        kind: Literal["partial", "skipped"]
        if state == "partial":
            kind = "partial"
        elif state == "not_started" and last_started is not None and entry.order < last_started:
            kind = "skipped"
        else:
            continue
        missing.append(
            MissingEntry(
                entry_id=entry.entry_id,
                order=entry.order,
                title=entry.title,
                kind=kind,
                missing_judges=[judge for judge in panel if judge.id not in scores.sheets],
            )
        )
    return Classified(entries=len(entries), **counts, missing=missing)


# -- reading ---------------------------------------------------------------------------------------


_SESSION_SQL = "SELECT session_id, name, stage, starts_at, position FROM sessions WHERE event_id = ?"


def _session_rows(conn: sqlite3.Connection, event_id: str) -> list[sqlite3.Row]:
    return conn.execute(_SESSION_SQL + " ORDER BY position", (event_id,)).fetchall()


def _session_row(conn: sqlite3.Connection, event_id: str | None, session_id: str) -> sqlite3.Row:
    row = conn.execute(_SESSION_SQL + " AND session_id = ?", (event_id, session_id)).fetchone()
    if row is None:
        raise NotFound(f"no session {session_id!r} in the current event: GET /admin/v1/sessions lists them")
    return row


def _session_head(row: sqlite3.Row) -> SessionHead:
    return SessionHead(id=row["session_id"], name=row["name"], stage=row["stage"], starts_at=row["starts_at"])


def panels(conn: sqlite3.Connection, event_id: str, session_id: str | None = None) -> dict[str, list[Judge]]:
    """session_id -> its panel judges by judge id (one session, or all)."""
    sql = (
        "SELECT p.session_id, j.judge_id, j.name FROM panels p"
        " JOIN judges j ON j.event_id = p.event_id AND j.judge_id = p.judge_id WHERE p.event_id = ?"
    )
    params: tuple[str, ...] = (event_id,)
    if session_id is not None:
        sql += " AND p.session_id = ?"
        params += (session_id,)
    found: dict[str, list[Judge]] = {}
    for row in conn.execute(sql + " ORDER BY p.session_id, j.judge_id", params):
        found.setdefault(row["session_id"], []).append(Judge(id=row["judge_id"], name=row["name"]))
    return found


def entry_scores(conn: sqlite3.Connection, event_id: str, session_id: str | None = None) -> list[EntryScores]:
    """The entries (of one session, or all) in running order, each with its sheet count per judge;
    scratched entries and the unscheduled pool left out.

    Entries come in ``entries_by_session`` order and each one's counts from the ledger's covering
    ``sheets_by_entry_judge`` index, as one JSON object per entry: one row per entry, however many
    sheets, keeps a status read a few milliseconds with tens of thousands of sheets."""
    sql = (
        "SELECT e.entry_id, e.session_id, e.running_order, e.title, e.category, e.division, e.level,"
        " e.studio, (SELECT json_group_object(judge_id, sheets) FROM ("
        "   SELECT s.judge_id, count(*) AS sheets FROM sheets s"
        "   WHERE s.event_id = e.event_id AND s.entry_id = e.entry_id GROUP BY s.judge_id)) AS sheets"
        " FROM entries e WHERE e.event_id = ? AND e.scratched = 0 AND e.session_id IS NOT NULL"
    )
    params: tuple[str, ...] = (event_id,)
    if session_id is not None:
        sql += " AND e.session_id = ?"
        params += (session_id,)
    return [
        EntryScores(
            entry_detail(row),
            msgspec.json.decode(row["sheets"]),
        )
        for row in conn.execute(sql + " ORDER BY e.session_id, e.running_order, e.entry_id", params)
    ]


def session_progress(
    conn: sqlite3.Connection, session_id: str, chosen_by: ChosenBy, missing_limit: int = MISSING_LIST_MAX
) -> SessionProgress:
    """One session's progress, said to be ``chosen_by`` that rule: its counts, all its missing
    entries in ``missing_total`` and at most ``missing_limit`` of them, in running order, in
    ``missing``. NotFound for a session not in the current event."""
    event_id = current_event_id(conn)
    row = _session_row(conn, event_id, session_id)
    assert event_id is not None  # a session was found, so there is an event
    progress = classify(
        entry_scores(conn, event_id, session_id), panels(conn, event_id, session_id).get(session_id, [])
    )
    return SessionProgress(
        id=row["session_id"],
        name=row["name"],
        stage=row["stage"],
        starts_at=row["starts_at"],
        chosen_by=chosen_by,
        entries=progress.entries,
        complete=progress.complete,
        partial=progress.partial,
        not_started=progress.not_started,
        missing_total=len(progress.missing),
        missing=progress.missing[:missing_limit],
    )


def current_session(conn: sqlite3.Connection, now: datetime) -> tuple[str, ChosenBy] | None:
    """(session_id, chosen_by) of the session being scored now, or None without event or sessions.

    The session of the entry of the newest sheet of the current event ("latest-sheet"); with no
    sheet yet, the last session that has started by ``now`` ("schedule"), else the first one
    ("first")."""
    event_id = current_event_id(conn)
    if event_id is None:
        return None
    # `+event_id` keeps SQLite walking seq backwards (the newest sheet is almost always this
    # event's) instead of sorting the event's whole share of the ledger.
    latest = conn.execute(
        "SELECT e.session_id FROM entries e WHERE e.event_id = ? AND e.entry_id ="
        " (SELECT s.entry_id FROM sheets s WHERE +s.event_id = ? ORDER BY s.seq DESC LIMIT 1)",
        (event_id, event_id),
    ).fetchone()
    if latest is not None:
        return latest[0], "latest-sheet"
    sessions = _session_rows(conn, event_id)
    if not sessions:
        return None
    started = [
        (starts_at, row["position"], row["session_id"])
        for row in sessions
        if (starts_at := _starts_at(row["starts_at"])) is not None and starts_at <= now
    ]
    if started:
        return max(started)[2], "schedule"
    return sessions[0]["session_id"], "first"


def _starts_at(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:  # the import checks times; an unreadable one just never counts as started
        return None


def current_session_progress(
    conn: sqlite3.Connection, now: datetime, missing_limit: int = MISSING_LIST_MAX
) -> SessionProgress | None:
    """The current session's progress (see ``current_session``), or None."""
    chosen = current_session(conn, now)
    if chosen is None:
        return None
    session_id, chosen_by = chosen
    return session_progress(conn, session_id, chosen_by, missing_limit)


def sessions_overview(conn: sqlite3.Connection) -> list[SessionOverview]:
    """Every session of the current event in position order, with its panel and progress counts."""
    event_id = current_event_id(conn)
    if event_id is None:
        return []
    panel_of = panels(conn, event_id)
    by_session: dict[str, list[EntryScores]] = {}
    for scores in entry_scores(conn, event_id):
        by_session.setdefault(scores.entry.session_id, []).append(scores)
    overview = []
    for row in _session_rows(conn, event_id):
        panel = panel_of.get(row["session_id"], [])
        progress = classify(by_session.get(row["session_id"], []), panel)
        overview.append(
            SessionOverview(
                id=row["session_id"],
                name=row["name"],
                stage=row["stage"],
                starts_at=row["starts_at"],
                position=row["position"],
                entries=progress.entries,
                judges=panel,
                complete=progress.complete,
                partial=progress.partial,
                not_started=progress.not_started,
            )
        )
    return overview


def session_grid(conn: sqlite3.Connection, session_id: str) -> SessionGrid:
    """The entries x panel judges grid of one session; each cell 'scored' (one sheet), 'corrected'
    (a correction chain) or 'missing'. NotFound for a session not in the current event."""
    event_id = current_event_id(conn)
    row = _session_row(conn, event_id, session_id)
    assert event_id is not None
    panel = panels(conn, event_id, session_id).get(session_id, [])
    entries = []
    for scores in entry_scores(conn, event_id, session_id):
        cells: list[GridCell] = []
        for judge in panel:
            count = scores.sheets.get(judge.id, 0)
            cells.append("missing" if count == 0 else "scored" if count == 1 else "corrected")
        entry = scores.entry
        entries.append(
            GridEntry(
                entry_id=entry.entry_id,
                order=entry.order,
                title=entry.title,
                category=entry.category,
                division=entry.division,
                studio=entry.studio,
                cells=cells,
            )
        )
    return SessionGrid(session=_session_head(row), judges=panel, entries=entries)


_FEED_SQL = """
    SELECT s.seq, s.sheet_id, s.entry_id, e.title AS entry_title, e.session_id, s.judge_id,
           j.name AS judge_name, s.device_id, s.score_values, s.comment, s.submitted_at,
           s.received_at, s.supersedes
    FROM sheets s
    LEFT JOIN entries e ON e.event_id = s.event_id AND e.entry_id = s.entry_id
    LEFT JOIN judges j ON j.event_id = s.event_id AND j.judge_id = s.judge_id
"""


def sheet_feed(
    conn: sqlite3.Connection, after: int | None = None, limit: int = FEED_LIMIT_DEFAULT
) -> SheetFeed:
    """The ledger as a live feed, oldest first: with ``after``, the sheets with a higher seq (at most
    ``limit``, clamped to 1..500); without, the last ``limit`` sheets. Also "last_seq", the ledger's
    newest seq (0 when empty), so a poller knows whether it has caught up."""
    limit = max(1, min(limit, FEED_LIMIT_MAX))
    if after is None:
        rows = conn.execute(
            f"SELECT * FROM ({_FEED_SQL} ORDER BY s.seq DESC LIMIT ?) ORDER BY seq", (limit,)
        ).fetchall()
    else:
        rows = conn.execute(f"{_FEED_SQL} WHERE s.seq > ? ORDER BY s.seq LIMIT ?", (after, limit)).fetchall()
    last_seq = conn.execute("SELECT coalesce(max(seq), 0) FROM sheets").fetchone()[0]
    sheets = []
    for row in rows:
        sheet = dict(row)
        values = _values(sheet.pop("score_values"))
        sheets.append(FeedSheet(**sheet, values=values, total=sheet_total(values)))
    return SheetFeed(sheets=sheets, last_seq=last_seq)


def _values(score_values: str) -> dict[str, float]:
    """A stored sheet's values (criterion -> score), every score a float."""
    return msgspec.json.decode(score_values, type=dict[str, float])


def entry_chains(conn: sqlite3.Connection, entry_id: str) -> EntryChains:
    """An entry of the current event (no participants) and, per judge of its session's panel, the
    chain of their sheets from the original to the head ("current"). A judge who has sheets for the
    entry is listed even if a later import took them off the panel. NotFound for an unknown entry."""
    event_id = current_event_id(conn)
    row = conn.execute(
        "SELECT entry_id, session_id, running_order, title, category, division, level, studio"
        " FROM entries WHERE event_id = ? AND entry_id = ?",
        (event_id, entry_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"no entry {entry_id!r} in the current event")
    assert event_id is not None
    chains: dict[str, list[ChainSheet]] = {
        judge.id: [] for judge in panels(conn, event_id, row["session_id"]).get(row["session_id"], [])
    }
    names = {
        judge_id: name
        for judge_id, name in conn.execute(
            "SELECT judge_id, name FROM judges WHERE event_id = ?", (event_id,)
        )
    }
    # A chain is linear and a correction always supersedes the head, so seq order is chain order.
    for sheet in conn.execute(
        "SELECT seq, sheet_id, judge_id, score_values, comment, submitted_at, received_at, supersedes, hash"
        " FROM sheets WHERE event_id = ? AND entry_id = ? ORDER BY judge_id, seq",
        (event_id, entry_id),
    ):
        values = _values(sheet["score_values"])
        chains.setdefault(sheet["judge_id"], []).append(
            ChainSheet(
                seq=sheet["seq"],
                sheet_id=sheet["sheet_id"],
                values=values,
                total=sheet_total(values),
                comment=sheet["comment"],
                submitted_at=sheet["submitted_at"],
                received_at=sheet["received_at"],
                supersedes=sheet["supersedes"],
                hash=sheet["hash"],
                current=False,
            )
        )
    judges = []
    for judge_id in sorted(chains):
        chain = chains[judge_id]
        if chain:
            chain[-1].current = True
        judges.append(JudgeChain(id=judge_id, name=names.get(judge_id, judge_id), chain=chain))
    entry = entry_detail(row)
    return EntryChains(entry=entry, judges=judges)
