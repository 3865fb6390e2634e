"""What the USB export writes for tabulating by hand: score tables as CSV, the event package of the
current schedule version (less personal data) and the audit log as JSON lines.

Every table function is a read of the current event over one connection (rows as
``sqlite3.Row``) and returns ``(header, rows)``: the header is a list, the rows a generator. One
SQL query reads the sheets, streamed row by row (results.csv is the results engine's, which reads
them all before its first row, to rank); a few small queries read the event's criteria, judges and
panels first; nothing is queried per row. Consume the rows inside the same read as the call, so
the header and the rows come from one snapshot: ``store.query(lambda c: write_csv(f, *scores_table(c)))``.

Personal data never reaches these files: participants and the columns an event package marks
personal stay encrypted in ``entries``, and sheet comments (free text a judge may fill with a
child's name) stay in the database. Judges' names, routine titles and studios are not personal data
here and are written.

CSV files are made for a spreadsheet program at 2 a.m.:

* UTF-8 with a byte-order mark, so Excel reads "Éclat" and "Niña Bonita" right (LibreOffice and
  Numbers ignore the mark, and our own event import accepts it);
* RFC 4180: separators, quotes and line breaks inside a value are quoted (``csv.QUOTE_MINIMAL``),
  and so are tabs (a spreadsheet told to split on tabs as well would cut the cell in two), lines
  end in CRLF;
* a dialect (appliance/shared/csv_dialects.py): ``excel``, commas between cells and decimal points
  (``9.4``), or ``excel-semicolon``, semicolons and decimal commas (``9,4``), what a spreadsheet set to a
  European language opens directly. Only numbers change with it, never text;
* numbers written plainly: a score is the shortest text that reads back as the stored number
  (``9.4``, ``10``, never ``9.400000000000001`` nor ``1E+1``); a total or sum of totals is the exact
  decimal sum of the scores (``9.4 + 9.1 + 8.5`` is ``27``, ``0.1 + 0.2`` is ``0.3``), so it has no
  more decimals than the finest criterion step (weights and deductions applied in results.csv);
  results.csv's score is the engine's, rounded half-up to the event's precision (``27.07``).
  Trailing zeros are dropped;
* yes/no for flags, empty cells for "nothing";
* formula injection guard: a text cell (never a number) that begins with ``=``, ``+``, ``-``, ``@``,
  a tab or a carriage return gets a leading ``'``, so a title like ``=HYPERLINK(...)`` shows as text
  instead of running. The event package files are the exception (``formula_guard=False``): they
  must re-import to the same event, and the guard would change the titles.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, BinaryIO, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from appliance.core import results_out
from appliance.core.box import current_event_id
from appliance.core.event_package.format import (
    ALL_SESSIONS,
    ENTRIES_FILE,
    ENTRY_PUBLIC_COLUMNS,
    EVENT_FILE,
    JUDGE_COLUMNS,
    JUDGES_FILE,
    LIST_SEPARATOR,
    PERSONAL_COLUMNS,
    plain_number,
)
from appliance.core.ledger import current_sheet_seqs
from appliance.core.progress import sheet_total
from appliance.shared.csv_dialects import EXCEL, CsvDialect
from appliance.shared.errors import NoEvent
from appliance.shared.results_wire import ResultsOut
from appliance.shared.times import parse_rfc3339

Cell = str | int | float | Decimal | bool | None
Table = tuple[list[str], Iterator[tuple[Cell, ...]]]

BOM = "\ufeff".encode()
# Cells a spreadsheet program may take for a formula (OWASP's "CSV injection" list).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_GUARDED = frozenset(FORMULA_START)
# Encode and write the CSV text in chunks of about this many characters.
_FLUSH_CHARS = 1 << 16

_decode_values = msgspec.json.Decoder(dict[str, float]).decode


# -- writing CSV -----------------------------------------------------------------------------------


# What the csv module does not quote but a spreadsheet may still cut a cell at (LibreOffice's import
# often splits on tabs as well as on the separator): a cell holding one is quoted too.
_QUOTE_TOO = "\t"


def write_csv(
    stream: BinaryIO,
    header: Sequence[Cell],
    rows: Iterable[Sequence[Cell]],
    *,
    formula_guard: bool = True,
    dialect: CsvDialect = EXCEL,
) -> int:
    """Write a CSV file (UTF-8 with BOM, RFC 4180, CRLF) to a binary ``stream`` in ``dialect``;
    returns the number of bytes written, BOM included. Cells are written as ``cells`` renders them.

    A cell holding a tab is quoted too. The csv module quotes only its own specials, so rows are
    written by it in chunks, and a chunk where a tab shows (rare: a title typed with one) is written
    again row by row, quoting every cell that needs it (``_quoted_line``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=dialect.delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    decimal = dialect.decimal
    stream.write(BOM)
    written = len(BOM)
    chunk: list[list[str | int | None]] = []

    def flush() -> int:
        text = buffer.getvalue()
        if _QUOTE_TOO in text:
            text = "".join(_quoted_line(row, dialect.delimiter) for row in chunk)
        data = text.encode("utf-8")
        stream.write(data)
        buffer.seek(0)
        buffer.truncate()
        chunk.clear()
        return len(data)

    first = cells(header, formula_guard, decimal)
    chunk.append(first)
    writer.writerow(first)
    for row in rows:
        rendered = cells(row, formula_guard, decimal)
        chunk.append(rendered)
        writer.writerow(rendered)
        if buffer.tell() >= _FLUSH_CHARS:
            written += flush()
    return written + flush()


def _quoted_line(row: Sequence[str | int | None], delimiter: str) -> str:
    """One CSV line as the csv module writes it (QUOTE_MINIMAL, CRLF), with tabs quoted as well."""
    special = (delimiter, '"', "\r", "\n", "\t")
    out = []
    for value in row:
        text = "" if value is None else value if type(value) is str else str(value)
        if any(c in text for c in special):
            text = '"' + text.replace('"', '""') + '"'
        out.append(text)
    if len(out) == 1 and out[0] == "":
        out[0] = '""'  # as the csv module writes a row of one empty cell
    return delimiter.join(out) + "\r\n"


def cells(row: Sequence[Cell], formula_guard: bool = True, decimal: str = ".") -> list[str | int | None]:
    """A row as the csv module should write it: text guarded against formulas (a leading ``'``),
    floats by ``number_text``, Decimals likewise, both with ``decimal`` as the decimal mark, bools
    as yes/no; ints and None (an empty cell) as they are, the csv module writes those itself."""
    number = number_text if decimal == "." else _comma_number
    # Inline branches for the common cells: this runs for every cell of a 100,000-sheet ledger.
    return [
        ("'" + value if formula_guard and value[:1] in _GUARDED else value)
        if type(value) is str
        else value
        if type(value) is int or value is None
        else number(value)
        if type(value) is float
        else _other_cell(value, formula_guard, decimal)
        for value in row
    ]


def _other_cell(value: Cell, formula_guard: bool, decimal: str = ".") -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return plain_number(value, signed_zero=False).replace(".", decimal)
    if isinstance(value, float):
        return number_text(float(value)).replace(".", decimal)
    if isinstance(value, int):
        return str(int(value))
    return cast(str, cells([str(value)], formula_guard, decimal)[0])  # a text cell stays text


@lru_cache(maxsize=65536)
def number_text(value: float) -> str:
    """The shortest text that reads back as ``value``, without exponent or trailing zeros:
    9.4 -> '9.4', 10.0 -> '10'. A float with binary noise keeps it (0.30000000000000004): the
    tables never make one, they add scores in decimal."""
    if not math.isfinite(value):
        return ""
    return plain_number(Decimal(repr(value)), signed_zero=False)


@lru_cache(maxsize=65536)
def _comma_number(value: float) -> str:
    """``number_text`` with a decimal comma: 9.4 -> '9,4'."""
    return number_text(value).replace(".", ",")


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


# -- reading the event ----------------------------------------------------------------------------


def _event_id(conn: sqlite3.Connection) -> str:
    event_id = current_event_id(conn)
    if event_id is None:
        raise NoEvent("no event imported on this box: import one with `venuebox event import PATH`")
    return event_id


def _criteria(conn: sqlite3.Connection, event_id: str) -> list[tuple[str, str]]:
    """(key, label) of the event's criteria in position order."""
    return [
        (row["key"], row["label"])
        for row in conn.execute(
            "SELECT key, label FROM criteria WHERE event_id = ? ORDER BY position", (event_id,)
        )
    ]


_HEADS_SQL = current_sheet_seqs()  # the current sheet of every (entry, judge) of the :event


def _tuples(conn: sqlite3.Connection, sql: str, params: Any) -> sqlite3.Cursor:
    """A cursor yielding plain tuples: indexing beats sqlite3.Row names on 100,000 rows."""
    cursor = conn.cursor()
    cursor.row_factory = None
    return cursor.execute(sql, params)


def _sheet_cells(keys: list[str]) -> Callable[[str], tuple[Cell, ...]]:
    """A sheet's ``score_values`` -> its value per criterion (in ``keys`` order, None if missing)
    and its total (``progress.sheet_total``). Cached by the stored text: judges give the same
    scores again and again, and the decimal sum is the costly part of a row."""

    @lru_cache(maxsize=8192)
    def sheet_cells(score_values: str) -> tuple[Cell, ...]:
        values = _decode_values(score_values)
        return (*[values.get(key) for key in keys], sheet_total(values))

    return sheet_cells


# -- scores.csv -----------------------------------------------------------------------------------

SCORES_HEAD = (
    "session_id",
    "session_name",
    "running_order",
    "entry_id",
    "title",
    "category",
    "division",
    "level",
    "studio",
    "judge_id",
    "judge_name",
)
SCORES_TAIL = ("total", "corrected", "sheet_id", "submitted_at", "received_at")

_SCORES_SQL = f"""
    SELECT e.session_id, se.name AS session_name, e.running_order, s.entry_id, e.title, e.category,
           e.division, e.level, e.studio, s.judge_id, j.name AS judge_name, s.score_values,
           s.supersedes, s.sheet_id, s.submitted_at, s.received_at
    FROM sheets s
    LEFT JOIN entries e ON e.event_id = s.event_id AND e.entry_id = s.entry_id
    LEFT JOIN sessions se ON se.event_id = e.event_id AND se.session_id = e.session_id
    LEFT JOIN judges j ON j.event_id = s.event_id AND j.judge_id = s.judge_id
    WHERE s.seq IN ({_HEADS_SQL})
    ORDER BY se.position, e.running_order, s.entry_id, s.judge_id
"""


def scores_table(conn: sqlite3.Connection) -> Table:
    """The current sheet of every (entry, judge) of the current event, one row each, by session
    position, running order and judge id. Columns: session_id, session_name, running_order,
    entry_id, title, category, division, level, studio, judge_id, judge_name, one column per
    criterion (its label, in position order), total, corrected (yes when the current sheet is a
    correction), sheet_id, submitted_at, received_at. No participants, no comments."""
    event_id = _event_id(conn)
    criteria = _criteria(conn, event_id)
    header = [*SCORES_HEAD, *(label for _, label in criteria), *SCORES_TAIL]
    sheet_cells = _sheet_cells([key for key, _ in criteria])
    cursor = _tuples(conn, _SCORES_SQL, {"event": event_id})

    def rows() -> Iterator[tuple[Cell, ...]]:
        # Columns 0-10 are written as selected; 11 is score_values, 12 supersedes, 13- the rest.
        for r in cursor:
            yield (*r[:11], *sheet_cells(r[11]), "no" if r[12] is None else "yes", *r[13:])

    return header, rows()


# -- ledger.csv -----------------------------------------------------------------------------------

LEDGER_HEAD = ("seq", "sheet_id", "entry_id", "judge_id", "judge_name")
LEDGER_TAIL = ("total", "submitted_at", "received_at", "supersedes", "superseded_by", "current", "hash")

# `+s.event_id` keeps SQLite walking the ledger in seq (rowid) order instead of sorting it; the
# successor comes from the unique index on `supersedes`.
_LEDGER_SQL = """
    SELECT s.seq, s.sheet_id, s.entry_id, s.judge_id, j.name AS judge_name, s.score_values,
           s.submitted_at, s.received_at, s.supersedes, c.sheet_id AS superseded_by, s.hash
    FROM sheets s
    LEFT JOIN judges j ON j.event_id = s.event_id AND j.judge_id = s.judge_id
    LEFT JOIN sheets c ON c.supersedes = s.sheet_id
    WHERE +s.event_id = ?
    ORDER BY s.seq
"""


def ledger_table(conn: sqlite3.Connection) -> Table:
    """Every sheet of the current event in ledger (seq) order, corrected ones included. Columns:
    seq, sheet_id, entry_id, judge_id, judge_name, one column per criterion, total, submitted_at,
    received_at, supersedes, superseded_by (the sheet that corrected it, empty if none), current
    (yes for the head of its chain), hash.

    There is deliberately no comment column: comments are free text a judge may fill with a
    child's name, so they stay in the box's database (and its encrypted copies), never in a plain
    file."""
    event_id = _event_id(conn)
    criteria = _criteria(conn, event_id)
    header = [*LEDGER_HEAD, *(label for _, label in criteria), *LEDGER_TAIL]
    sheet_cells = _sheet_cells([key for key, _ in criteria])
    cursor = _tuples(conn, _LEDGER_SQL, (event_id,))

    def rows() -> Iterator[tuple[Cell, ...]]:
        # Columns 0-4 are written as selected; 5 is score_values; 6-9 as selected; 10 hash.
        for r in cursor:
            yield (*r[:5], *sheet_cells(r[5]), *r[6:10], "yes" if r[9] is None else "no", r[10])

    return header, rows()


# -- results.csv ----------------------------------------------------------------------------------

RESULTS_HEAD = (
    "session_id",
    "session_name",
    "running_order",
    "entry_id",
    "title",
    "category",
    "division",
    "level",
    "studio",
    "judges_scored",
    "judges_on_panel",
)
RESULTS_TAIL = ("dropped", "score", "rank", "award", "complete", "provisional", "final")


def results_table(conn: sqlite3.Connection) -> Table:
    """Every entry of the current event, scored or not, as the results engine computes it under the
    event's scoring rules (appliance/core/results.py; EVENT_PACKAGE.md "scoring": without a block,
    the mean of the judges' totals at 2 decimals, ranked within category and division).

    Columns: session_id, session_name, running_order, entry_id, title, category, division, level,
    studio, judges_scored (current sheets), judges_on_panel, one column per judge of the event
    ("J1 Marisol Vega", by judge id; the total of their current sheet, weights and deductions
    applied, empty if none), dropped (the judges a trimmed mean left out, ';'-separated), score (the
    rounded score that is ranked and banded; empty when nobody scored), rank (within the entry's
    rank_within group; shared ranks repeat), award, complete (every panel judge scored), provisional
    and final (final: the session is locked and every panel judge signed off; otherwise
    provisional). An incomplete entry keeps its partial score but has no rank and no award.

    Rows come by group (rank_within values, entries without one last), then rank (unranked last),
    session position and running order: ``results_rows``."""
    out = results_out.results_out(conn)
    return results_rows(out, judge_heads(conn, out.event_id))


def judge_heads(conn: sqlite3.Connection, event_id: str) -> list[tuple[str, str]]:
    """(judge id, results.csv's column head "J1 Marisol Vega") of the event's judges, by judge id."""
    return [
        (row["judge_id"], f"{row['judge_id']} {row['name']}")
        for row in conn.execute(
            "SELECT judge_id, name FROM judges WHERE event_id = ? ORDER BY judge_id", (event_id,)
        )
    ]


def results_rows(out: ResultsOut, judges: Sequence[tuple[str, str]]) -> Table:
    """``out`` as results.csv's table (``results_table``): ``judges`` are (judge id, column head) in
    column order. ``venuebox results --format csv`` writes a filtered listing with it."""
    panels = {state.session_id: len(state.panel) for state in out.sessions}
    header = [*RESULTS_HEAD, *(head for _, head in judges), *RESULTS_TAIL]

    def rows() -> Iterator[tuple[Cell, ...]]:
        for group in out.groups:
            for r in group.rows:
                yield (
                    r.session_id,
                    r.session_name,
                    r.order,
                    r.entry_id,
                    r.title,
                    r.category,
                    r.division,
                    r.level,
                    r.studio,
                    len(r.totals),
                    panels.get(r.session_id, 0),
                    *[_decimal(r.totals.get(judge_id)) for judge_id, _ in judges],
                    LIST_SEPARATOR.join(r.dropped) or None,
                    _decimal(r.score),
                    r.rank,
                    r.award,
                    _yes_no(r.complete),
                    _yes_no(r.provisional),
                    _yes_no(r.final),
                )

    return header, rows()


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


# -- the event package ----------------------------------------------------------------------------


def event_package_files(conn: sqlite3.Connection) -> dict[str, bytes]:
    """The current event as an event package (EVENT_PACKAGE.md): {"event.json", "entries.csv",
    "judges.csv": bytes}. Importing these files on a fresh box gives the same event, criteria,
    sessions, entries and judges/panels, extra attributes included, except personal data: the
    ``participants`` column and the columns event.json marked ``personal_columns`` are left out (they
    stay encrypted on the box), and so is ``personal_columns`` itself, so the re-imported entries
    have none of them.

    The schedule is the current version (appliance/core/schedule.py): sessions' and entries' times,
    sessions and running orders as last published, walk-ons in their sessions. The format has no
    "scratched" flag and every entry needs a session, so scratched entries and walk-ons waiting in
    the unscheduled pool are left out: re-imported, the schedule is the one that runs, and nothing
    left out comes back as an entry to score.

    Times are written in the event's timezone (the import stores them in UTC, so they read back
    the same); the CSVs have no formula guard, which would change the titles."""
    event_id = _event_id(conn)
    event = conn.execute(
        "SELECT event_id, name, timezone, extra FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()
    if event is None:
        raise NoEvent(f"event {event_id!r} is no longer on this box")
    zone = _zone(event["timezone"])
    document: dict[str, Any] = {
        "id": event["event_id"],
        "name": event["name"],
        "timezone": event["timezone"],
        # personal_columns goes: the columns it names stay on the box, and a list naming columns
        # entries.csv lacks would not import. tablets_see_participants stays (it imports as is).
        **{k: v for k, v in json.loads(event["extra"]).items() if k != PERSONAL_COLUMNS},
        "criteria": [
            {
                "key": row["key"],
                "label": row["label"],
                "min": _json_number(row["min"]),
                "max": _json_number(row["max"]),
                "step": _json_number(row["step"]),
                **json.loads(row["extra"]),
            }
            for row in conn.execute(
                "SELECT * FROM criteria WHERE event_id = ? ORDER BY position", (event_id,)
            )
        ],
        "sessions": [
            {
                "id": row["session_id"],
                "name": row["name"],
                **({"stage": row["stage"]} if row["stage"] is not None else {}),
                **({"starts_at": _local(row["starts_at"], zone)} if row["starts_at"] is not None else {}),
                **json.loads(row["extra"]),
            }
            for row in conn.execute(
                "SELECT * FROM sessions WHERE event_id = ? ORDER BY position", (event_id,)
            )
        ],
    }
    return {
        EVENT_FILE: (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8"),
        ENTRIES_FILE: _entries_csv(conn, event_id, zone),
        JUDGES_FILE: _judges_csv(conn, event_id),
    }


def _entries_csv(conn: sqlite3.Connection, event_id: str, zone: ZoneInfo | None) -> bytes:
    # participants_enc and personal_enc are deliberately not selected. Scratched entries and the
    # unscheduled pool (session_id NULL) are left out (event_package_files).
    entries = conn.execute(
        "SELECT e.entry_id, e.session_id, e.running_order, e.scheduled_at, e.title, e.category,"
        " e.division, e.level, e.studio, e.extra FROM entries e"
        " JOIN sessions se ON se.event_id = e.event_id AND se.session_id = e.session_id"
        " WHERE e.event_id = ? AND NOT e.scratched ORDER BY se.position, e.running_order, e.entry_id",
        (event_id,),
    ).fetchall()
    return _package_csv(
        ENTRY_PUBLIC_COLUMNS,
        entries,
        lambda row: (
            row["entry_id"],
            row["session_id"],
            row["running_order"],
            _local(row["scheduled_at"], zone),
            row["title"],
            row["category"],
            row["division"],
            row["level"],
            row["studio"],
        ),
    )


def _judges_csv(conn: sqlite3.Connection, event_id: str) -> bytes:
    seats: dict[str, list[str]] = {}
    for row in conn.execute(
        "SELECT p.judge_id, p.session_id FROM panels p"
        " JOIN sessions se ON se.event_id = p.event_id AND se.session_id = p.session_id"
        " WHERE p.event_id = ? ORDER BY se.position",
        (event_id,),
    ):
        seats.setdefault(row["judge_id"], []).append(row["session_id"])
    judges = conn.execute(
        "SELECT judge_id, name, all_sessions, extra FROM judges WHERE event_id = ? ORDER BY judge_id",
        (event_id,),
    ).fetchall()
    return _package_csv(
        JUDGE_COLUMNS,
        judges,
        lambda row: (
            row["judge_id"],
            row["name"],
            # '*' re-imports as "every session", also sessions added later; a list would not.
            ALL_SESSIONS if row["all_sessions"] else LIST_SEPARATOR.join(seats.get(row["judge_id"], [])),
        ),
    )


def _package_csv(
    columns: Sequence[str], records: list[sqlite3.Row], documented: Callable[[sqlite3.Row], tuple[Any, ...]]
) -> bytes:
    """An event package CSV: the documented ``columns`` (cells from ``documented``), then every
    extra attribute any record has, in the order first seen (a record without one leaves it empty)."""
    extras = [json.loads(row["extra"]) for row in records]
    extra_columns = list(dict.fromkeys(key for extra in extras for key in extra))
    rows = (
        (*documented(row), *[extra.get(key) for key in extra_columns])
        for row, extra in zip(records, extras, strict=True)
    )
    stream = io.BytesIO()
    write_csv(stream, [*columns, *extra_columns], rows, formula_guard=False)
    return stream.getvalue()


def _json_number(value: float) -> int | float:
    # 10.0 -> 10: as a person writes it; the import reads both the same.
    return int(value) if float(value).is_integer() else value


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _local(text: str | None, zone: ZoneInfo | None) -> str | None:
    """A stored UTC time in the event's timezone (2026-03-14T08:00:00-04:00), as a package has it."""
    if text is None or zone is None:
        return text
    try:
        moment: datetime = parse_rfc3339(text)
    except ValueError:
        return text
    return moment.astimezone(zone).isoformat()


# -- audit.jsonl ----------------------------------------------------------------------------------

_audit_encoder = msgspec.json.Encoder()


def audit_jsonl(conn: sqlite3.Connection) -> Iterator[bytes]:
    """The audit log in seq order, one JSON object per line (UTF-8, ending in a newline): seq, at,
    actor, action, detail (the stored object, byte for byte), request_id, prev_hash, hash."""
    cursor = conn.execute(
        "SELECT seq, at, actor, action, detail, request_id, prev_hash, hash FROM audit_log ORDER BY seq"
    )
    return (
        _audit_encoder.encode(
            {
                "seq": row["seq"],
                "at": row["at"],
                "actor": row["actor"],
                "action": row["action"],
                "detail": msgspec.Raw(row["detail"].encode("utf-8")),
                "request_id": row["request_id"],
                "prev_hash": row["prev_hash"],
                "hash": row["hash"],
            }
        )
        + b"\n"
        for row in cursor
    )
