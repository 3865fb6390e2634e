"""Day-of changes and the event package (issue 20): the USB export's `event/` is the current schedule
version, and importing it on a fresh box gives the same schedule; `venuebox event import` lists the
package's `min_turnaround_min` conflicts as warnings, the ones `venuebox schedule validate` finds,
and imports anyway."""

from __future__ import annotations

import contextlib
import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

from appliance.core.config import Config
from tests.conftest import make_box, venuebox
from tests.schedule_package import TURNAROUND_MIN, dancer, schedule_package


def schedule_of(config: Config) -> dict[str, Any]:
    """The box's schedule as stored: sessions in order with their times, every entry's place, time,
    scratch and public fields."""
    uri = f"file:{config.db_path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        sessions = conn.execute(
            "SELECT session_id, name, stage, starts_at FROM sessions ORDER BY position"
        ).fetchall()
        entries = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT entry_id, session_id, running_order, scheduled_at, scratched, title, category,"
                " division, level, studio FROM entries ORDER BY entry_id"
            )
        }
    return {"sessions": sessions, "entries": entries}


def schedule_cli(config: Config, *args: str) -> str:
    done = venuebox(config, "schedule", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_exported_event_package_re_imports_to_the_published_schedule(tmp_path: Path) -> None:
    box = make_box(tmp_path / "box", schedule_package(tmp_path / "package"))
    imported = schedule_of(box)
    reason = ("--reason", "day of")
    schedule_cli(box, "scratch", "102", *reason)
    schedule_cli(
        box,
        "walk-on", "501", "--title", "Late Bloom", "--session", "SAT-AM", "--position", "3",
        "--at", "2026-03-14T08:07:00-04:00", "--category", "Solo", "--division", "Senior",
        "--participants", "Ana Roy", *reason,
    )  # fmt: skip
    schedule_cli(box, "walk-on", "502", "--title", "Still Waiting", "--category", "Solo", *reason)
    schedule_cli(box, "move", "110", "--to", "SAT-PM", "--position", "1", *reason)
    schedule_cli(box, "move", "104", "--to", "SAT-AM", "--position", "1", *reason)
    schedule_cli(box, "retime", "--entry", "105", "--at", "2026-03-14T09:40:00-04:00", *reason)
    schedule_cli(box, "retime", "--session", "SAT-PM", "--at", "2026-03-14T13:20:00-04:00", *reason)
    assert "published version 2" in schedule_cli(box, "publish", *reason)

    published = schedule_of(box)
    entries = published["entries"]
    # The changes are in the tables: a scratch, walk-ons in a session and in the pool, moves, retimes.
    # 501 went in at position 3, then 104 moved to position 1 ahead of it.
    assert entries["102"][3] == 1 and entries["501"][:2] == ("SAT-AM", 4) and entries["502"][0] is None
    assert entries["110"][:2] == ("SAT-PM", 1) and entries["104"][:2] == ("SAT-AM", 1)
    assert entries["105"][2] != imported["entries"]["105"][2]
    assert published["sessions"] != imported["sessions"]

    usb = tmp_path / "usb"
    usb.mkdir()
    exported = venuebox(box, "export", "--to", str(usb))
    assert exported.returncode == 0, exported.stderr
    [folder] = usb.iterdir()
    fresh = make_box(tmp_path / "fresh", folder / "event")

    again = schedule_of(fresh)
    assert again["sessions"] == published["sessions"]
    # The same schedule as it runs: every entry in a session and not scratched, at the same place and
    # time. The scratched entry and the walk-on waiting in the pool are not in the package (it has
    # no scratched flag and every entry needs a session), so nothing comes back as a routine to score.
    running = {e: row for e, row in entries.items() if row[0] is not None and not row[3]}
    assert set(entries) - set(running) == {"102", "502"}
    assert again["entries"] == running
    versions = venuebox(fresh, "schedule", "versions")
    assert versions.returncode == 0 and versions.stdout.startswith("version 1 ")


def plant_turnaround(package: Path) -> Path:
    """Entry 102 (3 minutes after 101) gets 101's dancer."""
    path = package / "entries.csv"
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["entry_id"] == "102":
            row["participants"] = dancer("101")
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return package


def test_event_import_lists_turnaround_conflicts_as_warnings_and_imports(tmp_path: Path) -> None:
    warning = "entries '101' and '102' share participant P. D. 3 min apart (min_turnaround_min is 10)"
    assert TURNAROUND_MIN == 10
    clean = make_box(tmp_path / "clean", None)
    done = venuebox(clean, "event", "import", str(schedule_package(tmp_path / "clean-package")))
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stdout and "Dancer" not in done.stdout

    box = make_box(tmp_path / "box", None)
    package = plant_turnaround(schedule_package(tmp_path / "package"))
    done = venuebox(box, "event", "import", str(package))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("imported glow-2026-toronto (snapshot ")
    assert lines[1:] == [f"  warning: {warning}"]
    assert "Dancer" not in done.stdout
    # Imported anyway, and the same check as validate's.
    assert len(schedule_of(box)["entries"]) == len(schedule_of(clean)["entries"])
    assert f"warning: {warning}" in schedule_cli(box, "validate").splitlines()

    # Re-imported (scoring has not started: it replaces the setup) with --json: listed there too.
    done = venuebox(box, "event", "import", str(package), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["warnings"] == [warning] and report["refused"] == []
