"""`venuebox event import` as a tech runs it: a package unlike the sample, and a broken one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import venuebox

MINIMAL_EVENT = {
    "id": "fs-2026",
    "name": "Formula Student — Scrutineering",
    "timezone": "Europe/Berlin",
    "criteria": [{"key": "safety", "label": "Safety", "min": -5, "max": 5, "step": 0.25}],
    "sessions": [{"id": "D1", "name": "Day 1"}],
}


def write_package(folder: Path, entries: str) -> Path:
    folder.mkdir()
    (folder / "event.json").write_text(json.dumps(MINIMAL_EVENT), encoding="utf-8")
    (folder / "entries.csv").write_text(entries, encoding="utf-8")
    (folder / "judges.csv").write_text("judge_id,name,sessions\nS1,Sam O’Neil,*\n", encoding="utf-8")
    return folder


def stored_setup(box: Path) -> list[tuple]:
    with sqlite3.connect(box / "venuebox.sqlite") as conn:
        return [
            *conn.execute("SELECT event_id, entry_id, session_id, running_order, title FROM entries"),
            *conn.execute("SELECT event_id, session_id, name FROM sessions"),
            *conn.execute("SELECT event_id, judge_id, name FROM judges"),
        ]


def test_a_package_of_one_of_each_imports_and_says_so_in_words(tmp_path: Path) -> None:
    box = tmp_path / "box"
    assert venuebox(box, "init", "--name", "Pit box").returncode == 0
    # Spreadsheet habits: capitalised headers in another order, a BOM, CRLF line ends.
    entries = "\ufeffTitle,Order,Session_ID,Entry_ID\r\nZüri Racer,1,D1,E-1\r\n"
    package = write_package(tmp_path / "pkg", entries)

    done = venuebox(box, "event", "import", str(package))

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported fs-2026 (snapshot ")
    assert done.stdout.rstrip().endswith("1 session, 1 entry, 1 judge, 1 criterion")


def test_a_broken_package_lists_every_problem_by_line_exits_non_zero_and_changes_nothing(
    tmp_path: Path,
) -> None:
    box = tmp_path / "box"
    assert venuebox(box, "init").returncode == 0
    good = write_package(tmp_path / "good", "entry_id,session_id,order,title\n1,D1,1,First\n2,D1,2,Second\n")
    assert venuebox(box, "event", "import", str(good)).returncode == 0
    before = stored_setup(box)
    assert len(before) == 4

    broken = write_package(tmp_path / "broken", "entry_id,session_id,order,title\n1,D1,1,A\n1,D9,2,B\n")
    refused = venuebox(box, "event", "import", str(broken))

    assert refused.returncode == 1
    assert refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert lines[0] == (
        "venuebox: error: event package has 2 problems; nothing was imported: fix them and import again"
    )
    assert lines[1:] == [
        "entries.csv:3: duplicate entry_id '1' (first on line 2)",
        "entries.csv:3: entry 1: unknown session 'D9' (event.json has: D1)",
    ]
    assert stored_setup(box) == before
