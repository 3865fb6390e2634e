"""Day-of changes end to end against a running daemon (issue 20): the tech scratches two entries and
walks one on in a draft (the CLI and the admin API), validate finds a planted turnaround conflict,
the fix is published as version 2, tablets learn it from their next heartbeat and their event
download shows it, results and missing scores follow it, a rollback restores the earlier schedule,
a publish while frozen changes nothing, and the ledger's sheets stay byte-identical throughout."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningBox, Tablet, make_box, venuebox
from tests.schedule_package import EMPTY_SESSION, dancer, schedule_package

AM = "SAT-AM"  # its panel is J1, J2 and J3


@pytest.fixture
def box(tmp_path: Path) -> Iterator[RunningBox]:
    config = make_box(
        tmp_path / "box", schedule_package(tmp_path / "package"), device_rate_per_s=1000.0, device_burst=1000
    )
    running = RunningBox(config).start()
    yield running
    running.stop()


def sheets_dump(box: RunningBox) -> list[tuple[Any, ...]]:
    """Every ledger row, every column, as stored."""
    uri = f"file:{box.config.db_path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return [tuple(row) for row in conn.execute("SELECT * FROM sheets ORDER BY seq")]


def heartbeat(tablet: Tablet) -> dict[str, Any]:
    with tablet.client() as c:
        answer = c.post("/api/v1/heartbeat", json={"sent_at": datetime.now(UTC).isoformat()})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def download(tablet: Tablet, etag: str | None = None) -> httpx.Response:
    with tablet.client() as c:
        return c.get("/api/v1/event", headers={"If-None-Match": etag} if etag else {})


def am_entries(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [session] = [s for s in event["sessions"] if s["id"] == AM]
    return {e["entry_id"]: e for e in session["entries"]}


def score(tablet: Tablet, *entry_ids: str) -> None:
    sheets = [tablet.sheet_for(entry_id) for entry_id in entry_ids]
    with tablet.client() as c:
        answer = c.post("/api/v1/sheets/batch", json={"sheets": sheets}).raise_for_status().json()
    assert [item["status"] for item in answer["results"]] == [201] * len(entry_ids)


def cli(box: RunningBox, *args: str) -> tuple[int, str, str]:
    done = venuebox(box.config, "schedule", *args)
    return done.returncode, done.stdout, done.stderr


def result_ids(admin: httpx.Client) -> set[str]:
    listing = admin.get("/admin/v1/results", params={"session": AM}).raise_for_status().json()
    return {row["entry_id"] for group in listing["groups"] for row in group["rows"]}


def missing_ids(admin: httpx.Client) -> set[str]:
    session = admin.get("/admin/v1/status").raise_for_status().json()["session"]
    assert session["id"] == AM
    return {m["entry_id"] for m in session["missing"]}


def test_day_of_changes_drafted_validated_published_and_rolled_back(box: RunningBox) -> None:
    j1, j2 = box.pair("J1", "J1 tablet"), box.pair("J2", "J2 tablet")
    score(j1, "101", "102", "103", "105")
    score(j2, "103")
    sheets_before = sheets_dump(box)
    first = download(j1)
    etag_v1 = first.headers["etag"]
    original = am_entries(first.json())
    assert first.json()["event_version"] == 1 and heartbeat(j1)["event_version"] == 1
    assert not any(e["scratched"] for e in original.values())

    with box.admin() as admin:
        assert {"101", "102"} <= missing_ids(admin)  # scored by J1 alone: partial
        # Refusals when typed: one line naming the entry or session, non-zero, the draft unchanged.
        code, _, err = cli(box, "scratch", "999", "--reason", "typo")
        assert code == 1 and err.count("\n") == 1 and "'999'" in err
        code, _, err = cli(box, "move", "103", "--to", EMPTY_SESSION, "--reason", "room")
        assert code == 1 and err.count("\n") == 1 and EMPTY_SESSION in err and "no judge" in err
        refused = admin.post(
            "/admin/v1/schedule/draft", json={"kind": "scratch", "entry_id": "999", "reason": "x"}
        )
        assert refused.status_code == 404 and "999" in refused.json()["detail"]

        # The draft: two scratches (CLI) and a walk-on (admin API) sharing 105's dancer 2 minutes after it.
        for entry_id in ("101", "102"):
            code, out, err = cli(box, "scratch", entry_id, "--reason", "injury")
            assert code == 0, err
        walk_on = {
            "kind": "walk-on",
            "entry_id": "501",
            "session_id": AM,
            "position": 3,
            "title": "Late Bloom",
            "category": "Solo",
            "division": "Senior",
            "scheduled_at": "2026-03-14T08:14:00-04:00",
            "participants": dancer("105"),
            "reason": "late registration",
        }
        drafted = admin.post("/admin/v1/schedule/draft", json=walk_on)
        assert drafted.status_code == 200, drafted.text
        assert [c["kind"] for c in drafted.json()["changes"]] == ["scratch", "scratch", "walk_on"]
        assert "Dancer" not in drafted.text  # participants are sealed, only counted

        # Validate finds the planted turnaround conflict (a warning, named by initials).
        code, out, _ = cli(box, "validate")
        assert code == 0 and "warning: entries '105' and '501' share participant P. D. 2 min apart" in out
        checked = admin.get("/admin/v1/schedule/validate").raise_for_status().json()
        turnaround = [p for p in checked["problems"] if p["code"] == "turnaround"]
        assert [p["entry_ids"] for p in turnaround] == [["105", "501"]] and checked["ok"]
        assert "P. D." in turnaround[0]["message"]
        # Fixed: the walk-on goes on later.
        code, _, err = cli(
            box, "retime", "--entry", "501", "--at", "2026-03-14T09:30:00-04:00", "--reason", "fix"
        )
        assert code == 0, err
        checked = admin.get("/admin/v1/schedule/validate").raise_for_status().json()
        assert not [p for p in checked["problems"] if p["code"] == "turnaround"]
        assert checked["changes"] == 4

        # A publish while frozen is refused and nothing changes.
        assert venuebox(box.config, "freeze", "--reason", "protest").returncode == 0
        code, _, err = cli(box, "publish", "--reason", "morning changes")
        assert code == 1 and "frozen" in err.lower()
        assert admin.post("/admin/v1/schedule/publish", json={"reason": "again"}).status_code == 423
        assert heartbeat(j1)["event_version"] == 1 and download(j1, etag_v1).status_code == 304
        assert len(admin.get("/admin/v1/schedule/draft").json()["changes"]) == 4
        assert venuebox(box.config, "unfreeze").returncode == 0

        published = admin.post("/admin/v1/schedule/publish", json={"reason": "morning changes"})
        assert published.status_code == 200, published.text
        assert published.json()["version"] == 2

        # The tablet's next heartbeat carries the new version; its download shows the change.
        assert heartbeat(j1)["event_version"] == 2
        changed = download(j1, etag_v1)
        assert changed.status_code == 200 and changed.headers["etag"] != etag_v1
        now = am_entries(changed.json())
        assert changed.json()["event_version"] == 2
        assert now["101"]["scratched"] and now["102"]["scratched"] and not now["103"]["scratched"]
        assert now["501"]["title"] == "Late Bloom" and now["501"]["order"] == 3
        assert [e for e in now if e != "501"] == list(original)  # nothing removed

        # Results and missing scores leave the scratched entries out and take the walk-on.
        ids = result_ids(admin)
        assert "101" not in ids and "102" not in ids and "501" in ids and "103" in ids
        missing = missing_ids(admin)
        assert "101" not in missing and "102" not in missing and "501" in missing

        # The version is listed and audited with its diff (the audit log travels to the cloud).
        code, out, _ = cli(box, "versions")
        assert code == 0 and "version 2" in out and "morning changes" in out and "entry 101: scratched" in out
        audited = admin.get("/admin/v1/audit", params={"action": "schedule.publish"}).json()
        assert len(audited) == 1

        # Rollback restores the earlier schedule as version 3.
        code, out, err = cli(box, "rollback", "1", "--reason", "back to the printed order")
        assert code == 0, err
        assert "published version 3" in out
        assert heartbeat(j2)["event_version"] == 3
        back = am_entries(download(j1).json())
        assert back == original
        assert {"101", "102"} <= missing_ids(admin) and "501" not in result_ids(admin)
        assert [v["version"] for v in admin.get("/admin/v1/schedule/versions").json()] == [1, 2, 3]

    # The ledger never moved.
    assert sheets_dump(box) == sheets_before
