"""Participants' names on a running box: ciphertext in the raw database file (read with the sqlite3
CLI and as bytes), never in a tablet's view, masked for the tech, in full only on a reveal with a
reason, which leaves exactly one access record."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance import personal
from tests.conftest import SAMPLE_EVENT, RunningBox


def sample_participants() -> dict[str, list[str]]:
    with (SAMPLE_EVENT / "entries.csv").open(encoding="utf-8") as f:
        return {
            row["entry_id"]: [n.strip() for n in row["participants"].split(";") if n.strip()]
            for row in csv.DictReader(f)
        }


@pytest.mark.skipif(
    shutil.which("sqlite3") is None, reason="the sqlite3 CLI is not installed (.ci/run has it)"
)
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
