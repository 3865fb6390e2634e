"""The USB export's tables on real boxes: current sheets and corrections, the ledger, results and
ranks, CSV bytes a spreadsheet reads safely, no personal data, the event package round trip and the
audit log as JSON lines."""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from appliance.core import personal
from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_sheets
from appliance.core.storage import Store
from appliance.core.tabulation import (
    Cell,
    audit_jsonl,
    event_package_files,
    ledger_table,
    results_table,
    scores_table,
    write_csv,
)
from appliance.shared.errors import NoEvent
from appliance.storage.db import connect
from provisioning.event_import import import_package, load_package
from tests.conftest import SAMPLE_EVENT, make_box, paired_device
from tests.personal_package import personal_package

# The sample event: SAT-AM (entries 101-120) is judged by J1 J2 J3, SAT-PM (121-140) by J1 J3 J4,
# SUN-AM (141-160) by J2 J3 J4 J5. Solo/Teen entries: 102 104 109 113 (SAT-AM), 126, 145 149.
COMMENT = "NOTE-7f3a: Naomi Roy lost a shoe, tell her mum"
BOM = b"\xef\xbb\xbf"


def values(technique: float, performance: float, choreography: float) -> dict[str, float]:
    return {"technique": technique, "performance": performance, "choreography": choreography}


@dataclass
class Scored:
    """The sheet ids of the scenario, by name."""

    ids: dict[str, str]


def submit(store: Store, judge_id: str, entry_id: str, scores: dict[str, float], **fields: Any) -> str:
    device = paired_device(store, judge_id)
    sheet = SheetSubmission(str(uuid.uuid4()), entry_id, scores, "2026-03-14T10:42:07-04:00", **fields)
    [receipt] = store.write_sync(lambda c: submit_sheets(c, [(device, sheet)]))
    assert isinstance(receipt, SheetReceipt) and receipt.status == 201, receipt
    return sheet.sheet_id


@pytest.fixture
def store(sample_store: Store) -> Store:
    return sample_store


@pytest.fixture
def scored(store: Store) -> Scored:
    """101: three judges (27, 27.1, 27.1: complete). 102: J1 corrected 22.6 -> 27, J2 27 (avg 27).
    104: J1 26, J2 corrected twice 15 -> 18 -> 28 (avg 27, a tie with 102). 109: J1 25.
    110: J1 0.1 + 0.2 + 0 (0.3, not 0.30000000000000004)."""
    ids = {
        "101-J1": submit(store, "J1", "101", values(9.4, 9.1, 8.5)),
        "101-J2": submit(store, "J2", "101", values(9.5, 9.1, 8.5)),
        "101-J3": submit(store, "J3", "101", values(9.5, 9.1, 8.5)),
        "102-J1": submit(store, "J1", "102", values(5.0, 9.1, 8.5), comment=COMMENT),
    }
    ids["102-J1-fix"] = submit(store, "J1", "102", values(9.4, 9.1, 8.5), supersedes=ids["102-J1"])
    ids["102-J2"] = submit(store, "J2", "102", values(9.4, 9.1, 8.5))
    ids["104-J1"] = submit(store, "J1", "104", values(9.0, 8.5, 8.5))
    ids["104-J2"] = submit(store, "J2", "104", values(5, 5, 5))
    ids["104-J2-fix"] = submit(store, "J2", "104", values(6, 6, 6), supersedes=ids["104-J2"])
    ids["104-J2-fix2"] = submit(store, "J2", "104", values(10, 9.5, 8.5), supersedes=ids["104-J2-fix"])
    ids["109-J1"] = submit(store, "J1", "109", values(8.0, 8.5, 8.5))
    ids["110-J1"] = submit(store, "J1", "110", values(0.1, 0.2, 0))
    return Scored(ids)


def csv_bytes(store: Store, table: Callable[[sqlite3.Connection], Any]) -> bytes:
    def write(conn: sqlite3.Connection) -> bytes:
        stream = io.BytesIO()
        written = write_csv(stream, *table(conn))
        assert written == len(stream.getvalue())
        return stream.getvalue()

    return store.query(write)


def parse(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    assert data.startswith(BOM)
    reader = csv.reader(io.StringIO(data[len(BOM) :].decode("utf-8"), newline=""))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


# -- scores.csv ------------------------------------------------------------------------------------


def test_scores_csv_holds_each_judges_current_sheet_and_marks_corrections(
    store: Store, scored: Scored
) -> None:
    header, rows = parse(csv_bytes(store, scores_table))

    assert header == [
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
        "Technique",
        "Performance",
        "Choreography",
        "total",
        "corrected",
        "sheet_id",
        "submitted_at",
        "received_at",
    ]
    assert [(r["entry_id"], r["judge_id"]) for r in rows] == [
        ("101", "J1"),
        ("101", "J2"),
        ("101", "J3"),
        ("102", "J1"),
        ("102", "J2"),
        ("104", "J1"),
        ("104", "J2"),
        ("109", "J1"),
        ("110", "J1"),
    ]
    by_key = {(r["entry_id"], r["judge_id"]): r for r in rows}
    fixed = by_key[("102", "J1")]
    assert (fixed["sheet_id"], fixed["corrected"]) == (scored.ids["102-J1-fix"], "yes")
    assert (fixed["Technique"], fixed["Performance"], fixed["Choreography"], fixed["total"]) == (
        "9.4",
        "9.1",
        "8.5",
        "27",
    )
    twice = by_key[("104", "J2")]
    assert (twice["sheet_id"], twice["corrected"], twice["total"]) == (scored.ids["104-J2-fix2"], "yes", "28")
    original = by_key[("101", "J1")]
    assert (original["sheet_id"], original["corrected"]) == (scored.ids["101-J1"], "no")
    assert (original["session_id"], original["session_name"], original["running_order"]) == (
        "SAT-AM",
        "Saturday morning",
        "1",
    )
    assert (original["title"], original["studio"], original["judge_name"]) == (
        "La Vie en Rose",
        "Northside Dance Collective",
        "Marisol Vega",
    )
    assert original["submitted_at"] == "2026-03-14T10:42:07-04:00" and original["received_at"]
    # Decimal sums: no binary floating point noise in a total.
    assert (by_key[("110", "J1")]["Choreography"], by_key[("110", "J1")]["total"]) == ("0", "0.3")


# -- ledger.csv ------------------------------------------------------------------------------------


def test_ledger_csv_lists_every_sheet_with_its_successor_and_whether_it_is_current(
    store: Store, scored: Scored
) -> None:
    header, rows = parse(csv_bytes(store, ledger_table))

    assert header == [
        "seq",
        "sheet_id",
        "entry_id",
        "judge_id",
        "judge_name",
        "Technique",
        "Performance",
        "Choreography",
        "total",
        "submitted_at",
        "received_at",
        "supersedes",
        "superseded_by",
        "current",
        "hash",
    ]
    assert [r["sheet_id"] for r in rows] == list(scored.ids.values())
    assert [int(r["seq"]) for r in rows] == sorted(int(r["seq"]) for r in rows)
    chain = [scored.ids[k] for k in ("104-J2", "104-J2-fix", "104-J2-fix2")]
    by_id = {r["sheet_id"]: r for r in rows}
    assert [(by_id[s]["supersedes"], by_id[s]["superseded_by"], by_id[s]["current"]) for s in chain] == [
        ("", chain[1], "no"),
        (chain[0], chain[2], "no"),
        (chain[1], "", "yes"),
    ]
    assert [by_id[s]["total"] for s in chain] == ["15", "18", "28"]
    assert by_id[scored.ids["102-J1"]]["total"] == "22.6"
    assert sum(r["current"] == "yes" for r in rows) == 9
    stored = store.query(lambda c: {r[0]: r[1] for r in c.execute("SELECT sheet_id, hash FROM sheets")})
    assert all(r["hash"] == stored[r["sheet_id"]] for r in rows)


# -- results.csv -----------------------------------------------------------------------------------


def test_results_csv_is_the_engines_ranks_ties_alike_and_skip_and_leaves_partly_scored_entries_unranked(
    store: Store, scored: Scored
) -> None:
    # results.csv used to rank partly scored entries on the judges so far (102 and 104 tied first
    # on two of three judges, 109 third on one). It now follows the results engine even without a
    # scoring block (EVENT_PACKAGE.md): an incomplete entry keeps its partial score, unranked and
    # provisional. J3 completes 102 and 104 (a tie: 27 each) and J2, J3 complete 109 (25).
    submit(store, "J3", "102", values(9.4, 9.1, 8.5))
    submit(store, "J3", "104", values(9.4, 9.1, 8.5))
    submit(store, "J2", "109", values(8.0, 8.5, 8.5))
    submit(store, "J3", "109", values(8.0, 8.5, 8.5))
    submit(store, "J1", "113", values(9.0, 9.0, 9.0))  # one of three: provisional, no rank

    header, rows = parse(csv_bytes(store, results_table))

    assert header == [
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
        "J1 Marisol Vega",
        "J2 Daniel O'Connor",
        "J3 Priya Raman",
        "J4 Étienne Lavoie",
        "J5 Keisha Brown",
        "dropped",
        "score",
        "rank",
        "award",
        "complete",
        "provisional",
        "final",
    ]
    assert len(rows) == 60  # every entry, scored or not
    groups = [(r["category"], r["division"]) for r in rows]
    assert groups == sorted(groups)
    solo_teen = [
        (r["entry_id"], r["rank"], r["score"], r["complete"], r["provisional"])
        for r in rows
        if (r["category"], r["division"]) == ("Solo", "Teen")
    ]
    assert solo_teen == [
        ("102", "1", "27", "yes", "yes"),
        ("104", "1", "27", "yes", "yes"),
        ("109", "3", "25", "yes", "yes"),
        ("113", "", "27", "no", "yes"),
        ("126", "", "", "no", "yes"),
        ("145", "", "", "no", "yes"),
        ("149", "", "", "no", "yes"),
    ]
    by_entry = {r["entry_id"]: r for r in rows}
    tied = by_entry["104"]
    assert [tied[h] for h in header[11:16]] == ["26", "28", "27", "", ""]
    assert (tied["judges_scored"], tied["judges_on_panel"]) == ("3", "3")
    full = by_entry["101"]
    assert [full[h] for h in header[9:16]] == ["3", "3", "27", "27.1", "27.1", "", ""]
    # The mean 27.0666... rounded half-up to the default precision of 2: what is shown is ranked.
    assert (full["score"], full["rank"], full["complete"]) == ("27.07", "1", "yes")
    assert (full["award"], full["dropped"], full["final"]) == ("", "", "no")
    unscored = by_entry["141"]
    assert (unscored["judges_scored"], unscored["judges_on_panel"], unscored["complete"]) == ("0", "4", "no")
    assert unscored["rank"] == unscored["score"] == ""
    # 110 (Small Group, Mini): one judge of three, 0.1 + 0.2 + 0 exactly; unranked.
    assert (by_entry["110"]["score"], by_entry["110"]["rank"]) == ("0.3", "")


# -- CSV bytes -------------------------------------------------------------------------------------

TRICKY_TITLES = {
    "101": 'Hello, "World"\nsecond line',
    "102": '=HYPERLINK("http://evil.example/?x=1","click me")',
    "103": "+Plus One",
    "104": "-Minus One",
    "105": "@At Home",
}


@pytest.fixture
def tricky_package(tmp_path: Path) -> Path:
    """The sample event with titles that need quoting or look like spreadsheet formulas."""
    folder = tmp_path / "tricky"
    shutil.copytree(SAMPLE_EVENT, folder)
    path = folder / "entries.csv"
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    for row in rows[1:]:
        row[4] = TRICKY_TITLES.get(row[0], row[4])
    with path.open("w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows(rows)
    return folder


def test_csv_starts_with_a_bom_and_quoted_titles_read_back_guarded_against_formulas(
    tmp_path: Path, tricky_package: Path
) -> None:
    with Store(make_box(tmp_path / "box", package=tricky_package).db_path) as store:
        submit(store, "J1", "101", values(9.4, 9.1, 8.5))
        scores = csv_bytes(store, scores_table)
        results = csv_bytes(store, results_table)

    assert scores.startswith(BOM + b"session_id,") and results.startswith(BOM + b"session_id,")
    assert b"\r\n" in results and b"\r\n\r\n" not in results
    titles = {r["entry_id"]: r["title"] for r in parse(results)[1]}
    assert titles["101"] == 'Hello, "World"\nsecond line'
    assert titles["102"] == "'" + TRICKY_TITLES["102"]
    assert (titles["103"], titles["104"], titles["105"]) == ("'+Plus One", "'-Minus One", "'@At Home")
    assert parse(scores)[1][0]["title"] == 'Hello, "World"\nsecond line'


def test_write_csv_guards_text_that_a_spreadsheet_would_run_but_writes_numbers_plainly() -> None:
    stream = io.BytesIO()
    row: list[Cell] = ["=1+2", "+x", "-x", "@x", "\tx", "\rx", "plain", "", -1, -1.5, 9.4, 10.0, 0.1 + 0.2]
    row += [Decimal("27.00"), Decimal("81.2"), None, True, False, 7]
    written = write_csv(stream, ["=header", "b"], [row])

    data = stream.getvalue()
    assert written == len(data)
    assert data.startswith(BOM) and data.endswith(b"\r\n")
    header, cells = list(csv.reader(io.StringIO(data[3:].decode("utf-8"), newline="")))
    assert header == ["'=header", "b"]
    assert cells == [
        "'=1+2",
        "'+x",
        "'-x",
        "'@x",
        "'\tx",
        "'\rx",
        "plain",
        "",
        "-1",
        "-1.5",
        "9.4",
        "10",
        "0.30000000000000004",  # a float is written as it is; sums are made exact before
        "27",
        "81.2",
        "",
        "yes",
        "no",
        "7",
    ]


# -- personal data ---------------------------------------------------------------------------------


def participant_names() -> set[str]:
    with (SAMPLE_EVENT / "entries.csv").open(encoding="utf-8", newline="") as file:
        return {name.strip() for row in csv.DictReader(file) for name in row["participants"].split(";")}


def test_no_participant_and_no_comment_reaches_any_plain_file(store: Store, scored: Scored) -> None:
    stored = store.query(
        lambda c: c.execute("SELECT comment FROM sheets WHERE comment IS NOT NULL").fetchall()
    )
    assert [r[0] for r in stored] == [COMMENT]  # the box does hold them

    files = {
        "scores.csv": csv_bytes(store, scores_table),
        "ledger.csv": csv_bytes(store, ledger_table),
        "results.csv": csv_bytes(store, results_table),
        "audit.jsonl": b"".join(store.query(lambda c: list(audit_jsonl(c)))),
        **store.query(event_package_files),
    }
    names = participant_names()
    assert len(names) > 50
    for name, data in files.items():
        text = data.decode("utf-8")
        assert "NOTE-7f3a" not in text, name
        assert [person for person in names if person in text] == [], name
        assert "participants" not in text, name


# -- the event package -----------------------------------------------------------------------------

SETUP_TABLES = {
    "events": "SELECT event_id, name, timezone, extra FROM events",
    "criteria": "SELECT * FROM criteria ORDER BY key",
    "sessions": "SELECT * FROM sessions ORDER BY session_id",
    "entries": "SELECT * FROM entries ORDER BY entry_id",
    "judges": "SELECT * FROM judges ORDER BY judge_id",
    "panels": "SELECT * FROM panels ORDER BY judge_id, session_id",
}


def setup_rows(store: Store) -> dict[str, list[dict[str, Any]]]:
    def read(conn: sqlite3.Connection) -> dict[str, list[dict[str, Any]]]:
        return {table: [dict(row) for row in conn.execute(sql)] for table, sql in SETUP_TABLES.items()}

    tables = store.query(read)
    for entry in tables["entries"]:
        entry.pop("participants_enc")
    return tables


@pytest.mark.parametrize("package", ["sample", "tricky"])
def test_the_regenerated_event_package_imports_to_the_same_event(
    tmp_path: Path, tricky_package: Path, package: str
) -> None:
    source = SAMPLE_EVENT if package == "sample" else tricky_package
    with Store(make_box(tmp_path / "first", package=source).db_path) as store:
        submit(store, "J1", "101", values(9.4, 9.1, 8.5))  # a scored event exports the same way
        files = store.query(event_package_files)
        original = setup_rows(store)

    folder = tmp_path / "regenerated"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    assert set(files) == {"event.json", "entries.csv", "judges.csv"}
    assert json.loads(files["event.json"])["venue"] == "Meridian Arts Centre, 5040 Yonge St, Toronto"
    assert files["entries.csv"].startswith(BOM + b"entry_id,session_id,order,scheduled_at,title,")
    assert b"participants" not in files["entries.csv"]
    assert b"\nJ3,Priya Raman,*," in files["judges.csv"].replace(b"\r\n", b"\n")

    config = make_box(tmp_path / "second", package=None)
    key = personal.load_key(config.data_key_path)
    loaded = load_package(folder)
    with Store(config.db_path) as fresh:
        fresh.write_sync(lambda conn: import_package(conn, loaded, key, "test"))
        again = setup_rows(fresh)
        assert (
            fresh.query(
                lambda c: c.execute(
                    "SELECT count(*) FROM entries WHERE participants_enc IS NOT NULL"
                ).fetchone()[0]
            )
            == 0
        )

    assert again == original
    assert len(again["entries"]) == 60 and json.loads(again["entries"][0]["extra"]) == {
        "music": "Édith Piaf – La Vie en Rose",
        "style": "Ballet",
    }


def test_columns_marked_personal_stay_on_the_box_and_the_package_still_reimports(tmp_path: Path) -> None:
    package = personal_package(tmp_path / "personal", tablets_see_participants=True)
    with Store(make_box(tmp_path / "first", package=package).db_path) as store:
        submit(store, "J1", "101", values(9.4, 9.1, 8.5))
        files = store.query(event_package_files)
        plain = b"".join(csv_bytes(store, table) for table in (scores_table, ledger_table, results_table))
        original = setup_rows(store)

    event = json.loads(files["event.json"])
    # personal_columns would name a column entries.csv no longer has; the tablets setting stays.
    assert "personal_columns" not in event and event["tablets_see_participants"] is True
    assert b"guardian_phone" not in files["entries.csv"] and b"participants" not in files["entries.csv"]
    for text in (*files.values(), plain):
        assert b"555 01" not in text and b"Naomi Roy" not in text

    folder = tmp_path / "regenerated"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with Store(make_box(tmp_path / "second", package=folder).db_path) as fresh:
        again = setup_rows(fresh)
        assert (
            fresh.query(
                lambda c: c.execute(
                    "SELECT count(*) FROM entries"
                    " WHERE personal_enc IS NOT NULL OR participants_enc IS NOT NULL"
                ).fetchone()[0]
            )
            == 0
        )
    for tables in (original, again):
        for entry in tables["entries"]:
            entry.pop("personal_enc")
        for event_row in tables["events"]:
            event_row["extra"] = {
                k: v for k, v in json.loads(event_row["extra"]).items() if k != "personal_columns"
            }
    assert again == original


# -- audit.jsonl -----------------------------------------------------------------------------------


def test_audit_jsonl_is_one_json_object_per_line_in_chain_order(store: Store, scored: Scored) -> None:
    lines = store.query(lambda c: list(audit_jsonl(c)))
    count = store.query(lambda c: c.execute("SELECT count(*) FROM audit_log").fetchone()[0])

    assert len(lines) == count > 0
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    records = [json.loads(line) for line in lines]
    assert all(
        list(r) == ["seq", "at", "actor", "action", "detail", "request_id", "prev_hash", "hash"]
        for r in records
    )
    assert all(isinstance(r["detail"], dict) for r in records)
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in itertools.pairwise(records))
    imported = next(r for r in records if r["action"] == "event.import")
    assert imported["detail"]["event_id"] == "glow-2026-toronto"


# -- no N+1 ----------------------------------------------------------------------------------------


def statements(store: Store, read: Callable[[sqlite3.Connection], Any]) -> list[str]:
    """The SQL statements ``read`` runs on a fresh reader connection."""
    conn = connect(store.path, readonly=True)
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        read(conn)
    finally:
        conn.close()
    return seen


def consume(table: Callable[[sqlite3.Connection], Any]) -> Callable[[sqlite3.Connection], Any]:
    def read(conn: sqlite3.Connection) -> Any:
        header, rows = table(conn)
        return header, list(rows)

    return read


READS: dict[str, Callable[[sqlite3.Connection], Any]] = {
    "scores": consume(scores_table),
    "ledger": consume(ledger_table),
    "results": consume(results_table),
    "package": event_package_files,
    "audit": lambda conn: list(audit_jsonl(conn)),
}


def test_each_file_is_read_with_a_fixed_number_of_queries_whatever_the_ledger_holds(
    store: Store, scored: Scored
) -> None:
    before = {name: statements(store, read) for name, read in READS.items()}
    for entry_id in [str(n) for n in range(111, 121)]:
        for judge_id in ("J1", "J2", "J3"):
            submit(store, judge_id, entry_id, values(9.4, 9.1, 8.5))
    after = {name: statements(store, read) for name, read in READS.items()}

    assert after == before
    # results.csv is the results engine's: a few small reads more (the rules, the sessions' locks and
    # sign-offs), still one read of the sheets and none per row.
    for name, most in (("scores", 5), ("ledger", 5), ("results", 15)):
        assert len([sql for sql in after[name] if "FROM sheets" in sql]) == 1, name
        assert len(after[name]) <= most, after[name]
    assert len(after["audit"]) == 1


def test_a_box_without_an_event_says_so_instead_of_writing_empty_tables(tmp_path: Path) -> None:
    with Store(make_box(tmp_path / "box", package=None).db_path) as store:
        for table in (scores_table, ledger_table, results_table, event_package_files):
            with pytest.raises(NoEvent, match="no event imported"):
                store.query(table)
        assert [json.loads(line)["action"] for line in store.query(lambda c: list(audit_jsonl(c)))] == [
            "box.init"
        ]
