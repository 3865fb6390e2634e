"""The sample event with more personal data: a ``guardian_phone`` column that event.json marks
personal, and any other event.json settings a test wants (``tablets_see_participants``)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import SAMPLE_EVENT

COLUMN = "guardian_phone"


def guardian_phone(entry_id: str) -> str:
    """Entry 101's guardian is +1 416 555 0101: unique per entry, easy to search raw bytes for."""
    return f"+1 416 555 {int(entry_id):04d}"


def participants_of_sample() -> dict[str, list[str]]:
    with (SAMPLE_EVENT / "entries.csv").open(encoding="utf-8") as f:
        return {
            row["entry_id"]: [n.strip() for n in row["participants"].split(";") if n.strip()]
            for row in csv.DictReader(f)
        }


def personal_package(folder: Path, **settings: Any) -> Path:
    """A copy of the sample event in ``folder`` with the guardian_phone column (personal) and
    ``settings`` added to event.json."""
    shutil.copytree(SAMPLE_EVENT, folder)
    event_file = folder / "event.json"
    event = json.loads(event_file.read_text(encoding="utf-8"))
    event.update({"personal_columns": [COLUMN], **settings})
    event_file.write_text(json.dumps(event, indent=2, ensure_ascii=False), encoding="utf-8")
    entries_file = folder / "entries.csv"
    with entries_file.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows[0].append(COLUMN)
    for row in rows[1:]:
        row.append(guardian_phone(row[0]))
    with entries_file.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return folder
