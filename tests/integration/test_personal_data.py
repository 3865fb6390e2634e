"""Participants' names, and the columns an event package marks personal, on a running box: ciphertext
in the raw database file (read with the sqlite3 CLI and as bytes), never in a tablet's view (but the
participants when the event lets tablets see them), masked for the tech, in full only on a reveal
with a reason, which leaves exactly one access record; and the same after the personal-data key is
rotated by the CLI while the daemon runs."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.core import personal
from tests.conftest import SAMPLE_EVENT, RunningBox, make_box, needs_tool
from tests.integration.test_backup_export import venuebox
from tests.personal_package import COLUMN, guardian_phone, personal_package


def sample_participants() -> dict[str, list[str]]:
    with (SAMPLE_EVENT / "entries.csv").open(encoding="utf-8") as f:
        return {
            row["entry_id"]: [n.strip() for n in row["participants"].split(";") if n.strip()]
            for row in csv.DictReader(f)
        }


@needs_tool(shutil.which("sqlite3") is not None, "the sqlite3 CLI is not installed (.ci/run installs it)")
def test_the_raw_database_holds_ciphertext_for_every_participant(running_box: RunningBox) -> None:
    rows = subprocess.run(
        ["sqlite3", str(running_box.config.db_path), "SELECT entry_id, participants_enc FROM entries"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    expected = sample_participants()
    sealed = dict(line.split("|", 1) for line in rows)
    assert set(sealed) == set(expected)
    for entry_id, names in expected.items():
        if names:
            assert sealed[entry_id].startswith(personal.PREFIX)
            assert not any(name in sealed[entry_id] for name in names)
    raw = b"".join(p.read_bytes() for p in running_box.config.data_dir.glob("venuebox.sqlite*"))
    everyone = {name for names in expected.values() for name in names}
    assert len(everyone) > 20
    assert [name for name in everyone if name.encode() in raw] == []


def test_tablets_never_see_participants(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    with tablet.client() as client:
        text = client.get("/api/v1/event").text
    everyone = {name for names in sample_participants().values() for name in names}
    assert "participants" not in text
    assert [name for name in everyone if name in text] == []


def test_the_tech_sees_initials_and_a_reveal_needs_a_reason_and_is_recorded_once(
    running_box: RunningBox,
) -> None:
    entry_id, names = next((e, n) for e, n in sample_participants().items() if len(n) >= 1)
    with running_box.admin() as admin:
        masked = admin.get(f"/admin/v1/entries/{entry_id}/participants").json()
        assert masked["masked"] is True
        assert masked["participants"] == [personal.mask(n) for n in names]
        assert not any(name in str(masked) for name in names)

        def access_records() -> list[dict]:
            return admin.get("/admin/v1/audit", params={"action": "personal.reveal"}).json()

        assert access_records() == []
        refused = admin.post(f"/admin/v1/entries/{entry_id}/participants/reveal", json={"reason": ""})
        assert refused.status_code == 422 and access_records() == []
        missing = admin.post(f"/admin/v1/entries/{entry_id}/participants/reveal", content=b"{}")
        assert missing.status_code == 422 and access_records() == []

        shown = admin.post(
            f"/admin/v1/entries/{entry_id}/participants/reveal",
            json={"reason": "parent at the desk asking about entry " + entry_id},
        )
        assert shown.status_code == 200 and shown.json()["participants"] == names
        [record] = access_records()
        assert record["actor"] == "admin-api"
        assert record["request_id"] == shown.headers["x-request-id"]
        assert '"field":"participants"' in record["detail"] and f'"entry_id":"{entry_id}"' in record["detail"]
        assert "parent at the desk" in record["detail"]
        assert not any(name in record["detail"] for name in names)
        assert (
            admin.post("/admin/v1/entries/nope/participants/reveal", json={"reason": "why"}).status_code
            == 404
        )
        assert len(access_records()) == 1


def test_the_key_file_is_private(running_box: RunningBox) -> None:
    assert Path(running_box.config.data_key_path).stat().st_mode & 0o077 == 0


# -- columns an event package marks personal, tablets that may see participants, key rotation ------


@pytest.fixture
def personal_box(tmp_path: Path) -> Iterator[RunningBox]:
    """A running box whose event marks guardian_phone personal and lets tablets see participants."""
    package = personal_package(tmp_path / "package", tablets_see_participants=True)
    box = RunningBox(make_box(tmp_path / "box", package=package)).start()
    yield box
    box.stop()


def test_columns_marked_personal_are_ciphertext_in_the_raw_database(personal_box: RunningBox) -> None:
    db = personal_box.config.db_path
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT entry_id, personal_enc, extra FROM entries").fetchall()
    assert len(rows) == 60
    for entry_id, sealed, extra in rows:
        assert list(json.loads(sealed)) == [COLUMN] and json.loads(sealed)[COLUMN].startswith(personal.PREFIX)
        assert COLUMN not in json.loads(extra)
        assert guardian_phone(entry_id) not in sealed
    if shutil.which("sqlite3"):  # the CLI as a person would look, like the test above
        dump = subprocess.run(
            ["sqlite3", str(db), ".dump"], capture_output=True, text=True, check=True
        ).stdout
        assert "555 01" not in dump
    raw = b"".join(p.read_bytes() for p in personal_box.config.data_dir.glob("venuebox.sqlite*"))
    assert [e for e in sample_participants() if guardian_phone(e).encode() in raw] == []


def test_tablets_see_participants_only_when_the_event_says_so_and_never_other_personal_columns(
    personal_box: RunningBox, tmp_path: Path
) -> None:
    tablet = personal_box.pair("J1")
    with tablet.client() as client:
        shown = client.get("/api/v1/event")
        etag = shown.headers["etag"]
    entries = [e for s in shown.json()["sessions"] for e in s["entries"]]
    expected = sample_participants()
    assert entries and all(e["participants"] == expected[e["entry_id"]] for e in entries)
    assert "555 01" not in shown.text and COLUMN not in shown.text

    # The same event without the setting: no participants key at all, and another ETag.
    closed = personal_package(tmp_path / "closed")
    done = venuebox(personal_box.config, "event", "import", str(closed))
    assert done.returncode == 0, done.stderr
    with tablet.client() as client:
        again = client.get("/api/v1/event", headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.headers["etag"] != etag
    assert "participants" not in again.text and "Naomi Roy" not in again.text and "555 01" not in again.text


def test_the_tech_sees_every_personal_field_masked_and_reveals_one_with_a_reason(
    personal_box: RunningBox,
) -> None:
    entry_id = "103"
    names = sample_participants()[entry_id]
    with personal_box.admin() as admin:
        masked = admin.get(f"/admin/v1/entries/{entry_id}/personal").json()
        assert masked == {
            "entry_id": entry_id,
            "masked": True,
            "fields": {"participants": [personal.mask(n) for n in names], COLUMN: "+•••"},
        }
        # The participants endpoints keep working as they did.
        assert admin.get(f"/admin/v1/entries/{entry_id}/participants").json()["participants"] == [
            personal.mask(n) for n in names
        ]

        def access_records() -> list[dict]:
            return admin.get("/admin/v1/audit", params={"action": "personal.reveal"}).json()

        url = f"/admin/v1/entries/{entry_id}/personal/reveal"
        for body in (
            {"field": COLUMN, "reason": " "},
            {"field": COLUMN},
            {"field": "title", "reason": "why"},
        ):
            refused = admin.post(url, json=body)
            assert refused.status_code == 422 and refused.json()["request_id"], body
        assert (
            admin.post(
                "/admin/v1/entries/nope/personal/reveal", json={"field": COLUMN, "reason": "why"}
            ).status_code
            == 404
        )
        assert access_records() == []

        shown = admin.post(url, json={"field": COLUMN, "reason": "call the guardian of entry 103"})
        assert shown.status_code == 200
        assert shown.json() == {
            "entry_id": entry_id,
            "field": COLUMN,
            "value": guardian_phone(entry_id),
            "masked": False,
        }
        [record] = access_records()
        detail = json.loads(record["detail"])
        assert detail == {"entry_id": entry_id, "field": COLUMN, "reason": "call the guardian of entry 103"}
        assert record["actor"] == "admin-api" and record["request_id"] == shown.headers["x-request-id"]
        assert guardian_phone(entry_id) not in str(record)

        everyone = admin.post(url, json={"field": "participants", "reason": "results desk"}).json()
        assert everyone["value"] == names and len(access_records()) == 2


def test_a_key_rotation_by_the_cli_while_the_daemon_runs_changes_nothing_anyone_sees(
    personal_box: RunningBox,
) -> None:
    tablet = personal_box.pair("J2")
    with tablet.client() as client:
        before = client.get("/api/v1/event")
    with personal_box.admin() as admin:
        masked = admin.get("/admin/v1/entries/101/personal").json()
    old_key = personal_box.config.data_key_path.read_text()

    rotated = venuebox(personal_box.config, "keys", "rotate-data-key")

    assert rotated.returncode == 0, rotated.stderr
    [line] = rotated.stdout.splitlines()
    assert line.startswith("personal-data key rotated: ") and "120 field(s) of 60 entries" in line
    assert personal_box.config.data_key_path.read_text() != old_key
    with personal_box.admin() as admin:
        assert admin.get("/admin/v1/entries/101/personal").json() == masked
        shown = admin.post(
            "/admin/v1/entries/101/personal/reveal", json={"field": COLUMN, "reason": "after the rotation"}
        )
        assert shown.json()["value"] == guardian_phone("101")
        [record] = admin.get("/admin/v1/audit", params={"action": "personal.rotate_key"}).json()
        assert record["actor"] == "cli" and old_key.strip() not in record["detail"]
    with tablet.client() as client:
        # Same names, same body: the tablet's cached copy is still good.
        after = client.get("/api/v1/event", headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 304


def test_rotating_without_a_box_is_one_readable_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "--data-dir",
            str(tmp_path / "nothing"),
            "keys",
            "rotate-data-key",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "no box in" in line and "venuebox init" in line
