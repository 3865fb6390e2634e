"""The sample event made for schedule tests: each entry's participant is their own
("P101 Dancer"), so a turnaround warning is only the one a test plants; ``min_turnaround_min`` is
set; and a fourth session, SUN-PM, has no judge on its panel (J3 sits on the three others only)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from tests.conftest import SAMPLE_EVENT

EMPTY_SESSION = "SUN-PM"
TURNAROUND_MIN = 10


def dancer(entry_id: str) -> str:
    return f"P{entry_id} Dancer"


def schedule_package(folder: Path) -> Path:
    shutil.copytree(SAMPLE_EVENT, folder)
    event_file = folder / "event.json"
    event = json.loads(event_file.read_text(encoding="utf-8"))
    event["min_turnaround_min"] = TURNAROUND_MIN
    event["sessions"].append(
        {
            "id": EMPTY_SESSION,
            "name": "Sunday afternoon",
            "stage": "Main Stage",
            "starts_at": "2026-03-15T13:00:00-04:00",
        }
    )
    event_file.write_text(json.dumps(event, indent=2, ensure_ascii=False), encoding="utf-8")
    for name, column, value in (("entries.csv", "participants", None), ("judges.csv", "sessions", "*")):
        path = folder / name
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            if value is None:
                row[column] = dancer(row["entry_id"])
            elif row[column] == value:
                row[column] = "SAT-AM;SAT-PM;SUN-AM"
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder
