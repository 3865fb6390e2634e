"""Event package import on a real SQLite file: checking, round trips, re-imports, freeze, audit."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from appliance.core import audit, chain, personal
from appliance.core.storage import Store, create_database
from appliance.shared.errors import Frozen
from provisioning.event_import import (
    ImportRefused,
    ImportReport,
    PackageInvalid,
    import_package,
    load_package,
)

SAMPLE_EVENT = Path(__file__).resolve().parents[2] / "provisioning" / "sample_event"
SAMPLE_ID = "glow-2026-toronto"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db_path = tmp_path / "venuebox.sqlite"
    create_database(db_path)
    store = Store(db_path)
    store.write_sync(
        lambda c: c.execute(
            "INSERT INTO box (id, box_id, name, created_at) "
            "VALUES (1, 'box-1', 'Test box', '2026-01-01T00:00:00Z')"
        )
    )
    yield store
    store.close()


@pytest.fixture
def data_key(tmp_path: Path) -> bytes:
    path = tmp_path / "personal-data.key"
    personal.create_key(path)
    return personal.load_key(path)


def run_import(store: Store, package_path: Path, data_key: bytes, actor: str = "test") -> ImportReport:
    package = load_package(package_path)
    return store.write_sync(lambda conn: import_package(conn, package, data_key, actor))


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove an import that failed changed nothing at all."""

    def read(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        return {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables}

    return store.query(read)


def rows(store: Store, sql: str, *params: Any) -> list[dict[str, Any]]:
    return store.query(lambda conn: [dict(r) for r in conn.execute(sql, params)])


def copy_sample(tmp_path: Path, name: str = "package") -> Path:
    return Path(shutil.copytree(SAMPLE_EVENT, tmp_path / name))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, records: list[dict[str, str]], *, bom: bool = False, delimiter: str = ",") -> None:
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        writer = csv.DictWriter(f, list(records[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(records)


def write_package(folder: Path, event: str, entries: str, judges: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "event.json").write_text(event, encoding="utf-8")
    (folder / "entries.csv").write_text(entries, encoding="utf-8", newline="")
    (folder / "judges.csv").write_text(judges, encoding="utf-8", newline="")
    return folder


def add_sheet(store: Store, entry_id: str, judge_id: str, event_id: str = SAMPLE_ID) -> None:
    sheet = {
        "sheet_id": str(uuid.uuid4()),
        "event_id": event_id,
        "entry_id": entry_id,
        "judge_id": judge_id,
        "device_id": "dev-1",
        "score_values": json.dumps({"technique": 8.5, "performance": 9.0, "choreography": 8.5}),
        "comment": None,
        "submitted_at": "2026-03-14T12:05:00.000000Z",
        "received_at": "2026-03-14T12:05:01.000000Z",
        "supersedes": None,
        "content_hash": "h",
    }
    store.write_sync(lambda conn: chain.append(conn, "sheets", sheet))


def small_event(event_id: str = "spring-gala") -> str:
    return json.dumps(
        {
            "id": event_id,
            "name": "Spring Gala",
            "timezone": "America/Toronto",
            "criteria": [{"key": "technique", "label": "Technique", "min": 0, "max": 10, "step": 0.1}],
            "sessions": [
                {"id": "S1", "name": "Saturday", "stage": "Main", "starts_at": "2026-04-18T09:00:00-04:00"}
            ],
        }
    )


# -- the shipped sample --------------------------------------------------------------------------


def test_shipped_sample_event_imports_with_its_sessions_entries_judges_and_panels(
    store: Store, data_key: bytes
) -> None:
    report = run_import(store, SAMPLE_EVENT, data_key)

    assert report.event_id == SAMPLE_ID
    assert report.counts == {"sessions": 3, "entries": 60, "judges": 5, "criteria": 3}
    assert report.replaced and not report.refused
    assert rows(store, "SELECT event_id FROM box")[0]["event_id"] == SAMPLE_ID
    event = rows(store, "SELECT * FROM events")[0]
    assert event["snapshot_id"] == report.snapshot_id and event["timezone"] == "America/Toronto"
    assert [r["key"] for r in rows(store, "SELECT key FROM criteria ORDER BY position")] == [
        "technique",
        "performance",
        "choreography",
    ]
    assert [r["session_id"] for r in rows(store, "SELECT session_id FROM sessions ORDER BY position")] == [
        "SAT-AM",
        "SAT-PM",
        "SUN-AM",
    ]
    # J3 is `*`: flagged and expanded into a panel seat on every session; the others sit on subsets.
    judges = {r["judge_id"]: r["all_sessions"] for r in rows(store, "SELECT * FROM judges")}
    assert judges == {"J1": 0, "J2": 0, "J3": 1, "J4": 0, "J5": 0}
    seats = rows(store, "SELECT judge_id, count(*) AS n FROM panels GROUP BY judge_id ORDER BY judge_id")
    assert [(r["judge_id"], r["n"]) for r in seats] == [("J1", 2), ("J2", 2), ("J3", 3), ("J4", 2), ("J5", 1)]
    first = rows(store, "SELECT * FROM entries WHERE entry_id = '101'")[0]
    assert first["session_id"] == "SAT-AM" and first["running_order"] == 1
    assert first["scheduled_at"] == "2026-03-14T12:00:00.000000Z"  # 08:00 EDT, stored as UTC
    assert set(json.loads(first["extra"])) == {"style", "music"}


def test_import_is_recorded_in_the_audit_log_with_its_snapshot_id_and_no_names(
    store: Store, data_key: bytes
) -> None:
    report = run_import(store, SAMPLE_EVENT, data_key, actor="cli")

    row = store.query(lambda conn: audit.tail(conn, 1, action="event.import"))[0]
    detail = json.loads(row.detail)
    assert row.actor == "cli"
    assert detail["event_id"] == SAMPLE_ID and detail["snapshot_id"] == report.snapshot_id
    assert (detail["entries"], detail["judges"], detail["refused"]) == (60, 5, [])
    some_dancer = read_csv(SAMPLE_EVENT / "entries.csv")[0]["participants"].split(";")[0].strip()
    assert some_dancer not in row.detail


# -- checking ------------------------------------------------------------------------------------

BAD_EVENT = """{
  "id": "bad-event",
  "name": "",
  "timezone": "America/Torono",
  "criteria": [
    {"key": "technique", "label": "Technique", "min": 0, "max": 10, "step": 0.3},
    {"key": "technique", "label": "Again", "min": 0, "max": 10, "step": 0.5},
    {"key": "flow", "label": "Flow", "min": 10, "max": 0, "step": 1}
  ],
  "sessions": [
    {"id": "SAT-AM", "name": "Saturday morning", "starts_at": "2026-03-14 08:00"},
    {"id": "SAT-PM", "name": "Saturday afternoon", "starts_at": "2026-03-14T13:00:00-04:00"},
    {"id": "SAT-PM", "name": "Again"}
  ]
}
"""
BAD_ENTRIES = (
    "entry_id,session_id,order,scheduled_at,title,participants,music\r\n"
    '101,SAT-AM,1,2026-03-14T08:00:00-04:00,"Opening, ""Number""",Ana López; Ben Roy,x\r\n'
    '102,SAT-AM,2,2026-03-14T08:03:00-04:00,"A title on\r\ntwo lines",Cara Diaz,y\r\n'
    "101,SAT-AM,3,2026-03-14T08:06:00-04:00,Duplicate id,,z\r\n"
    "103,SUN-ZZ,1,2026-03-14T08:09:00-04:00,Unknown session,,\r\n"
    "104,SAT-AM,2,2026-03-14T08:12:00-04:00,Same order,,\r\n"
    "105,SAT-PM,two,2026-03-14T13:00:00-04:00,Order not a number,,\r\n"
    "106,SAT-PM,2,tomorrow,Bad time,,\r\n"
    "107,SAT-PM,3,2026-03-14T13:03:00-04:00,,,\r\n"
    # 07:00-05:00 is the same instant as entry 101's 08:00-04:00; the name differs only in case and spaces.
    "108,SAT-PM,4,2026-03-14T07:00:00-05:00,Clash, ANA LÓPEZ ,\r\n"
)
BAD_JUDGES = (
    "judge_id,name,sessions\n"
    "J1,Judge One,SAT-AM;SAT-PM\n"
    "J2,,SAT-AM\n"
    "J1,Dup,*\n"
    "J3,Judge Three,SUN-ZZ\n"
    "J4,Judge Four,\n"
)


def test_every_problem_is_reported_with_file_and_line_and_nothing_changes(
    store: Store, data_key: bytes, tmp_path: Path
) -> None:
    run_import(store, SAMPLE_EVENT, data_key)
    before = dump(store)
    bad = write_package(tmp_path / "bad", BAD_EVENT, BAD_ENTRIES, BAD_JUDGES)

    with pytest.raises(PackageInvalid) as caught:
        store.write_sync(lambda conn: import_package(conn, load_package(bad), data_key, "test"))

    problems = caught.value.problems
    expected = [
        ("event.json:3:", "'name' is empty"),
        ("event.json:4:", "unknown timezone 'America/Torono'"),
        ("event.json:6:", "step 0.3 does not divide the range 0..10"),
        ("event.json:7:", "duplicate criterion key 'technique' (first on line 6)"),
        ("event.json:8:", "min (10) must be less than max (0)"),
        ("event.json:11:", "starts_at '2026-03-14 08:00' must be an RFC 3339 date-time"),
        ("event.json:13:", "duplicate session id 'SAT-PM' (first on line 12)"),
        ("entries.csv:5:", "duplicate entry_id '101' (first on line 2)"),
        ("entries.csv:6:", "unknown session 'SUN-ZZ'"),
        ("entries.csv:7:", "duplicate order 2 in session SAT-AM (entry 102 on line 3"),
        ("entries.csv:8:", "order 'two' is not a whole number"),
        ("entries.csv:9:", "scheduled_at 'tomorrow' must be an RFC 3339 date-time"),
        ("entries.csv:10:", "title is empty"),
        ("entries.csv:11:", "participant 'A. L.' is also in entry 101 (line 2)"),
        ("judges.csv:3:", "name is empty"),
        ("judges.csv:4:", "duplicate judge_id 'J1' (first on line 2)"),
        ("judges.csv:5:", "unknown session 'SUN-ZZ'"),
        ("judges.csv:5:", "judge J3 is on no existing session"),
        ("judges.csv:6:", "sessions is empty"),
    ]
    assert len(problems) == len(expected), "\n".join(problems)
    for (prefix, fragment), problem in zip(expected, problems, strict=True):
        assert problem.startswith(prefix) and fragment in problem, problem
    assert caught.value.detail.startswith(f"event package has {len(expected)} problems")
    # The masked name says where to look without printing personal data.
    assert not any("López" in p or "LÓPEZ" in p for p in problems)
    assert dump(store) == before


def test_missing_files_invalid_json_and_missing_columns_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "event.json").write_text('{\n  "id": "x",\n  "name": "X",,\n}\n', encoding="utf-8")
    (folder / "entries.csv").write_text("entry_id,session_id,title\n1,S1,Solo\n", encoding="utf-8")

    with pytest.raises(PackageInvalid) as caught:
        load_package(folder)

    problems = caught.value.problems
    assert problems[0].startswith("event.json:3: invalid JSON")
    assert problems[1] == "entries.csv:1: missing required column 'order'"
    assert problems[2].startswith("judges.csv:1: file is missing")
    assert len(problems) == 3


def test_criterion_steps_are_checked_with_decimal_arithmetic(tmp_path: Path) -> None:
    # 0.1 divides 0..10 and 0.05 divides 0..1.2 exactly, although not in binary floating point.
    event = json.loads(small_event())
    event["criteria"] = [
        {"key": "a", "label": "A", "min": 0, "max": 10, "step": 0.1},
        {"key": "b", "label": "B", "min": 0, "max": 1.2, "step": 0.05},
        {"key": "c", "label": "C", "min": 0, "max": 10, "step": 0},
    ]
    folder = write_package(
        tmp_path / "p",
        json.dumps(event, indent=1),
        "entry_id,session_id,order,title\n",
        "judge_id,name,sessions\n",
    )

    with pytest.raises(PackageInvalid) as caught:
        load_package(folder)

    assert len(caught.value.problems) == 1
    assert "criterion 'c': step (0) must be greater than 0" in caught.value.problems[0]


# -- content survives ----------------------------------------------------------------------------


def test_unicode_quotes_commas_semicolons_emoji_and_newlines_survive_a_round_trip(
    store: Store, data_key: bytes, tmp_path: Path
) -> None:
    entries = [
        {
            "title": 'Café "Noir", act II; encore 💃',
            "category": "Small Group",
            "division": "Teen",
            "level": "Élite",
            "studio": "Rhythm & Soul, Inc.; Toronto",
            "participants": 'Zoë Ñúñez; "Kiki" O\'Hara; 李小龙',
            "entry_id": "7A",
            "session_id": "S1",
            "order": "1",
            "music": 'Piaf – "Non, je ne regrette rien"',
        },
        {
            "title": "Line one\nLine two\r\nLine three",
            "category": "Solo",
            "division": "Senior",
            "level": "Open",
            "studio": "Studio «Étoile» 🌟",
            "participants": "Mía Ödegaard",
            "entry_id": "8",
            "session_id": "S1",
            "order": "2",
            "music": "",
        },
    ]
    folder = write_package(
        tmp_path / "unicode", small_event(), "", "judge_id,name,sessions\nJ1,Zoë “Zed” Ng,*\n"
    )
    # Written the way spreadsheets write it: BOM, CRLF, columns in their own order.
    write_csv(folder / "entries.csv", entries, bom=True)

    run_import(store, folder, data_key)

    stored = {r["entry_id"]: r for r in rows(store, "SELECT * FROM entries")}
    for entry in entries:
        row = stored[entry["entry_id"]]
        for column in ("title", "category", "division", "level", "studio"):
            assert row[column] == entry[column]
        assert row["running_order"] == int(entry["order"])
        row_id = f"spring-gala/{entry['entry_id']}"
        assert (
            personal.decrypt(data_key, "entries", "participants", row_id, row["participants_enc"])
            == entry["participants"]
        )
        assert json.loads(row["extra"]) == {"music": entry["music"]}
    assert rows(store, "SELECT name FROM judges")[0]["name"] == "Zoë “Zed” Ng"


def test_semicolon_and_tab_separated_files_from_a_spreadsheet_import_like_commas(
    store: Store, data_key: bytes, tmp_path: Path
) -> None:
    # What a spreadsheet set to French or German writes as "CSV": semicolons, since the comma is
    # its decimal mark; a value holding a semicolon (participants) is quoted.
    entries = [
        {
            "entry_id": "1",
            "session_id": "S1",
            "order": "1",
            "title": "Vol, au vent",
            "participants": "Ann; Bo",
        },
        {"entry_id": "2", "session_id": "S1", "order": "2", "title": "Poutre", "participants": "Cé"},
    ]
    folder = write_package(
        tmp_path / "semicolons", small_event(), "", "judge_id\tname\tsessions\nJ1\tZoë\tS1\n"
    )
    write_csv(folder / "entries.csv", entries, bom=True, delimiter=";")

    report = run_import(store, folder, data_key)

    assert (report.counts["entries"], report.counts["judges"]) == (2, 1)
    stored = rows(store, "SELECT entry_id, title, participants_enc FROM entries ORDER BY running_order")
    assert [(r["entry_id"], r["title"]) for r in stored] == [("1", "Vol, au vent"), ("2", "Poutre")]
    row_id = "spring-gala/1"
    assert (
        personal.decrypt(data_key, "entries", "participants", row_id, stored[0]["participants_enc"])
        == "Ann; Bo"
    )
    assert rows(store, "SELECT judge_id, name FROM judges") == [{"judge_id": "J1", "name": "Zoë"}]


def test_extra_columns_and_unknown_json_keys_are_kept(store: Store, data_key: bytes, tmp_path: Path) -> None:
    event = json.loads(small_event())
    event["venue"] = {"name": "Meridian Hall", "seats": 3191}
    event["criteria"][0]["weight"] = 2
    event["sessions"][0]["doors_open"] = "08:30"
    folder = write_package(
        tmp_path / "extras",
        json.dumps(event),
        "Entry_ID,Title,session_id,order,music,costume_notes\n1,Solo,S1,1,Queen,sequins; red\n",
        "judge_id,name,sessions,specialty\nJ1,Ana,S1,Tap\n",
    )

    run_import(store, folder, data_key)

    assert json.loads(rows(store, "SELECT extra FROM events")[0]["extra"]) == {
        "venue": {"name": "Meridian Hall", "seats": 3191}
    }
    assert json.loads(rows(store, "SELECT extra FROM criteria")[0]["extra"]) == {"weight": 2}
    assert json.loads(rows(store, "SELECT extra FROM sessions")[0]["extra"]) == {"doors_open": "08:30"}
    entry = rows(store, "SELECT * FROM entries")[0]
    assert entry["title"] == "Solo"  # documented columns match whatever their case in the header
    assert json.loads(entry["extra"]) == {"music": "Queen", "costume_notes": "sequins; red"}
    assert json.loads(rows(store, "SELECT extra FROM judges")[0]["extra"]) == {"specialty": "Tap"}


@pytest.mark.parametrize("layout", ["files at the root", "one top-level folder"])
def test_zip_imports_like_the_folder_with_the_same_snapshot_id(
    store: Store, data_key: bytes, tmp_path: Path, layout: str
) -> None:
    archive = tmp_path / "glow-2026-toronto.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        prefix = "" if layout == "files at the root" else "glow-2026-toronto/"
        for name in ("event.json", "entries.csv", "judges.csv"):
            z.write(SAMPLE_EVENT / name, prefix + name)
        # What macOS's "Compress" adds next to the real files.
        z.writestr("__MACOSX/glow-2026-toronto/._event.json", b"\x00\x05\x16\x07")

    from_zip = load_package(archive)
    from_folder = load_package(SAMPLE_EVENT)

    assert from_zip == from_folder
    assert from_zip.snapshot_id == from_folder.snapshot_id
    report = run_import(store, archive, data_key)
    assert report.snapshot_id == from_folder.snapshot_id
    assert report.counts == {"sessions": 3, "entries": 60, "judges": 5, "criteria": 3}


def test_snapshot_id_changes_when_any_file_changes(tmp_path: Path) -> None:
    folder = copy_sample(tmp_path)
    before = load_package(folder).snapshot_id
    with (folder / "judges.csv").open("a", encoding="utf-8") as f:
        f.write("J6,Sam Lee,SUN-AM,Acro\n")

    assert load_package(folder).snapshot_id != before


# -- personal data -------------------------------------------------------------------------------


def test_participants_are_stored_only_as_ciphertext(store: Store, data_key: bytes, tmp_path: Path) -> None:
    name = "Wilhelmina Quackenbush"
    folder = write_package(
        tmp_path / "private",
        small_event(),
        f"entry_id,session_id,order,title,participants\n1,S1,1,Solo,{name}; Bartholomew Figgis\n"
        "2,S1,2,Duet,\n",
        "judge_id,name,sessions\nJ1,Ana,S1\n",
    )

    run_import(store, folder, data_key)

    stored = {r["entry_id"]: r["participants_enc"] for r in rows(store, "SELECT * FROM entries")}
    assert stored["2"] is None
    assert stored["1"].startswith(personal.PREFIX)
    plain = personal.decrypt(data_key, "entries", "participants", "spring-gala/1", stored["1"])
    assert plain == f"{name}; Bartholomew Figgis"
    db_path = store.path
    store.close()  # checkpoint the WAL so every byte is in the main file
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    for secret in (name, "Quackenbush", "Bartholomew Figgis"):
        assert secret.encode() not in raw


def personal_event(**settings: Any) -> str:
    """small_event with settings, one key per line (the import reports event.json lines)."""
    return json.dumps({**json.loads(small_event()), **settings}, indent=2)


def test_columns_marked_personal_are_sealed_field_by_field_and_kept_out_of_extras(
    store: Store, data_key: bytes, tmp_path: Path
) -> None:
    phone, born = "+1 416 555 0199", "2013-05-02"
    folder = write_package(
        tmp_path / "private",
        personal_event(personal_columns=["Guardian_Phone", "date_of_birth", "participants"]),
        "entry_id,session_id,order,title,participants,guardian_phone,date_of_birth,style\n"
        f"1,S1,1,Solo,Wilhelmina Quackenbush,{phone},{born},Jazz\n"
        "2,S1,2,Duet,,,,Tap\n",
        "judge_id,name,sessions\nJ1,Ana,S1\n",
    )

    report = run_import(store, folder, data_key)

    assert report.counts["entries"] == 2
    stored = {r["entry_id"]: r for r in rows(store, "SELECT * FROM entries")}
    assert json.loads(stored["1"]["extra"]) == {"style": "Jazz"}
    assert stored["2"]["personal_enc"] is None and json.loads(stored["2"]["extra"]) == {"style": "Tap"}
    sealed = json.loads(stored["1"]["personal_enc"])
    assert sorted(sealed) == ["date_of_birth", "guardian_phone"]
    assert all(token.startswith(personal.PREFIX) for token in sealed.values())
    # Each value is bound to its own column and row: the AAD names both.
    assert (
        personal.decrypt(data_key, "entries", "guardian_phone", "spring-gala/1", sealed["guardian_phone"])
        == phone
    )
    assert (
        personal.decrypt(data_key, "entries", "date_of_birth", "spring-gala/1", sealed["date_of_birth"])
        == born
    )
    with pytest.raises(InvalidTag):
        personal.decrypt(data_key, "entries", "date_of_birth", "spring-gala/1", sealed["guardian_phone"])
    [event] = rows(store, "SELECT extra FROM events")
    # Stored as the header names them (participants is personal anyway): what the admin API lists.
    assert json.loads(event["extra"])["personal_columns"] == ["guardian_phone", "date_of_birth"]
    db_path = store.path
    store.close()
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    for secret in (phone, born, "Wilhelmina"):
        assert secret.encode() not in raw


def test_personal_settings_that_cannot_work_are_import_errors_with_their_lines(tmp_path: Path) -> None:
    folder = write_package(
        tmp_path / "bad",
        personal_event(
            personal_columns=["guardian_phone", "title", "allergies", 7],
            tablets_see_participants="yes",
        ),
        "entry_id,session_id,order,title,guardian_phone\n1,S1,1,Solo,555\n",
        "judge_id,name,sessions\nJ1,Ana,S1\n",
    )
    lines = (folder / "event.json").read_text().splitlines()

    def line_of(text: str) -> int:
        return next(n for n, line in enumerate(lines, 1) if text in line)

    title, allergies, seven = line_of('"title"'), line_of('"allergies"'), line_of("7")
    flag = line_of("tablets_see_participants")

    with pytest.raises(PackageInvalid) as caught:
        load_package(folder)

    assert caught.value.problems == [
        f"event.json:{title}: personal_columns: 'title' is a documented column that is not "
        "personal data (only participants and extra columns can be personal)",
        f"event.json:{allergies}: personal_columns: entries.csv has no column 'allergies' "
        "(its extra columns: guardian_phone)",
        f"event.json:{seven}: personal_columns: 7 is not a column name",
        f"event.json:{flag}: 'tablets_see_participants' must be true or false, not \"yes\"",
    ]
    not_a_list = write_package(
        tmp_path / "bad2",
        personal_event(personal_columns="guardian_phone"),
        "entry_id,session_id,order,title\n",
        "judge_id,name,sessions\nJ1,Ana,S1\n",
    )
    with pytest.raises(PackageInvalid, match="1 problem") as caught:
        load_package(not_a_list)
    assert "'personal_columns' must be a list of entries.csv column names" in caught.value.problems[0]


# -- re-imports ----------------------------------------------------------------------------------


def test_reimport_before_scoring_replaces_the_setup(store: Store, data_key: bytes, tmp_path: Path) -> None:
    first = run_import(store, SAMPLE_EVENT, data_key)
    folder = copy_sample(tmp_path)
    entries = read_csv(folder / "entries.csv")
    entries = [e for e in entries if e["entry_id"] != "160"]
    entries[0]["title"] = "La Vie en Rose (reprise)"
    write_csv(folder / "entries.csv", entries)
    judges = read_csv(folder / "judges.csv")
    write_csv(folder / "judges.csv", [j for j in judges if j["judge_id"] != "J5"])

    report = run_import(store, folder, data_key)

    assert report.replaced and report.snapshot_id != first.snapshot_id
    assert report.counts == {"sessions": 3, "entries": 59, "judges": 4, "criteria": 3}
    assert not rows(store, "SELECT * FROM entries WHERE entry_id = '160'")
    assert not rows(store, "SELECT * FROM panels WHERE judge_id = 'J5'")
    assert (
        rows(store, "SELECT title FROM entries WHERE entry_id = '101'")[0]["title"]
        == "La Vie en Rose (reprise)"
    )
    assert rows(store, "SELECT snapshot_id FROM events")[0]["snapshot_id"] == report.snapshot_id


def test_reimport_after_scoring_keeps_what_is_scored_and_adds_what_is_new(
    store: Store, data_key: bytes, tmp_path: Path
) -> None:
    run_import(store, SAMPLE_EVENT, data_key)
    add_sheet(store, "101", "J1")
    add_sheet(store, "102", "J1")
    folder = copy_sample(tmp_path)
    entries = read_csv(folder / "entries.csv")
    by_id = {e["entry_id"]: e for e in entries}
    by_id["102"]["order"] = "40"  # renumber a scored entry
    by_id["104"]["title"] = "Éclat (new cut)"  # a non-scoring attribute of an unscored entry
    new = dict(
        by_id["160"], entry_id="161", order="21", title="Encore ✨", scheduled_at="2026-03-15T10:00:00-04:00"
    )
    kept = [e for e in entries if e["entry_id"] not in ("101", "103")]  # remove scored 101 and unscored 103
    write_csv(folder / "entries.csv", [*kept, new])
    event = json.loads((folder / "event.json").read_text(encoding="utf-8"))
    event["criteria"][0]["step"] = 0.25  # scoring has started: must not change
    event["criteria"][1]["label"] = "Performance quality"  # a label may
    (folder / "event.json").write_text(json.dumps(event), encoding="utf-8")
    judges = [j for j in read_csv(folder / "judges.csv") if j["judge_id"] != "J1"]  # J1 has sheets
    judges.append({"judge_id": "J6", "name": "Sam Lee", "sessions": "SUN-AM", "specialty": "Acro"})
    write_csv(folder / "judges.csv", judges)

    report = run_import(store, folder, data_key)

    assert not report.replaced
    stored = {r["entry_id"]: r for r in rows(store, "SELECT * FROM entries")}
    assert (stored["101"]["session_id"], stored["101"]["running_order"]) == ("SAT-AM", 1)
    assert (stored["102"]["session_id"], stored["102"]["running_order"]) == ("SAT-AM", 2)
    assert "103" not in stored
    assert stored["104"]["title"] == "Éclat (new cut)"
    assert stored["161"]["title"] == "Encore ✨" and stored["161"]["session_id"] == "SUN-AM"
    criteria = {r["key"]: r for r in rows(store, "SELECT * FROM criteria")}
    assert criteria["technique"]["step"] == 0.1
    assert criteria["performance"]["label"] == "Performance quality"
    assert rows(store, "SELECT name FROM judges WHERE judge_id = 'J1'")[0]["name"] == "Marisol Vega"
    assert {r["session_id"] for r in rows(store, "SELECT * FROM panels WHERE judge_id = 'J1'")} == {
        "SAT-AM",
        "SAT-PM",
    }
    assert {r["session_id"] for r in rows(store, "SELECT * FROM panels WHERE judge_id = 'J6'")} == {"SUN-AM"}

    refused = "\n".join(report.refused)
    assert "entry 101" in refused and "package removes it" in refused
    assert "entry 102" in refused and "kept in SAT-AM at order 2" in refused
    assert "criterion technique: kept min 0, max 10, step 0.1" in refused
    assert "judge J1" in refused
    assert any(line.startswith("entry 161") for line in report.added)
    assert any(line.startswith("judge J6") for line in report.added)
    assert any(line.startswith("entry 103") for line in report.removed)
    assert report.counts == {"sessions": 3, "entries": 60, "judges": 6, "criteria": 3}
    detail = json.loads(store.query(lambda c: audit.tail(c, 1, action="event.import"))[0].detail)
    assert detail["refused"] == report.refused and detail["replaced"] is False


def test_a_new_entry_is_not_put_in_the_slot_a_scored_entry_keeps(
    store: Store, data_key: bytes, tmp_path: Path
) -> None:
    run_import(store, SAMPLE_EVENT, data_key)
    add_sheet(store, "101", "J1")
    folder = copy_sample(tmp_path)
    entries = [e for e in read_csv(folder / "entries.csv") if e["entry_id"] != "101"]
    # Into SAT-AM order 1, which scored entry 101 keeps although the package drops it.
    entries.append(
        dict(
            entries[0],
            entry_id="999",
            order="1",
            title="Usurper",
            scheduled_at="2026-03-14T08:00:00-04:00",
            participants="",
        )
    )
    write_csv(folder / "entries.csv", entries)

    report = run_import(store, folder, data_key)

    assert not rows(store, "SELECT * FROM entries WHERE entry_id = '999'")
    assert rows(store, "SELECT title FROM entries WHERE entry_id = '101'")[0]["title"] == "La Vie en Rose"
    assert any(line.startswith("entry 999: not added") for line in report.refused)


def test_import_is_refused_while_frozen_and_changes_nothing(
    store: Store, data_key: bytes, tmp_path: Path
) -> None:
    run_import(store, SAMPLE_EVENT, data_key)
    store.write_sync(lambda c: c.execute("UPDATE box SET frozen = 1, freeze_reason = 'x' WHERE id = 1"))
    folder = copy_sample(tmp_path)
    write_csv(folder / "entries.csv", read_csv(folder / "entries.csv")[:10])
    before = dump(store)

    with pytest.raises(Frozen) as caught:
        run_import(store, folder, data_key)

    assert "imports refused" in caught.value.detail
    assert dump(store) == before


def test_another_event_is_refused_once_the_current_one_has_sheets(
    store: Store, data_key: bytes, tmp_path: Path
) -> None:
    other = write_package(
        tmp_path / "other",
        small_event("other-event"),
        "entry_id,session_id,order,title\n1,S1,1,Solo\n",
        "judge_id,name,sessions\nJ1,Ana,S1\n",
    )
    run_import(store, SAMPLE_EVENT, data_key)
    # Before any sheet, another event may take the box over...
    assert run_import(store, other, data_key).replaced
    assert rows(store, "SELECT event_id FROM box")[0]["event_id"] == "other-event"
    run_import(store, SAMPLE_EVENT, data_key)
    add_sheet(store, "101", "J1")
    before = dump(store)

    # ...after one, it may not.
    with pytest.raises(ImportRefused, match="glow-2026-toronto"):
        run_import(store, other, data_key)

    assert dump(store) == before
