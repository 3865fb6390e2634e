"""Results at the venue, end to end over HTTP against a running daemon (issue 19): judges score and
sign off from their tablets, the tech locks the session, and the results turn from provisional to
final; a correction after a sign-off is refused 423 until the tech reopens it."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RunningBox, Tablet, make_box, venuebox

SESSION = "SAT-AM"  # the sample event's: its panel is J1, J2 and J3
PANEL = ("J1", "J2", "J3")


def a_sheet(
    criteria: list[dict[str, Any]], entry_id: str, offset: int, supersedes: str | None = None
) -> dict[str, Any]:
    """A sheet with values that differ by entry and judge (on every criterion's step)."""
    values = {c["key"]: c["min"] + c["step"] * (5 + offset % 10) for c in criteria}
    sheet: dict[str, Any] = {
        "sheet_id": str(uuid.uuid4()),
        "entry_id": entry_id,
        "values": values,
        "submitted_at": datetime.now(UTC).isoformat(),
    }
    if supersedes:
        sheet["supersedes"] = supersedes
    return sheet


def results(admin: httpx.Client) -> dict[str, Any]:
    answer = admin.get("/admin/v1/results", params={"session": SESSION})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def rows(listing: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for group in listing["groups"] for row in group["rows"]]


def state(listing: dict[str, Any]) -> dict[str, Any]:
    [session] = [s for s in listing["sessions"] if s["session_id"] == SESSION]
    return dict(session)


def sign_off(tablet: Tablet, session_id: str = SESSION) -> httpx.Response:
    with tablet.client() as c:
        return c.post(f"/api/v1/sessions/{session_id}/final", json={})


def send(tablet: Tablet, sheet: dict[str, Any]) -> httpx.Response:
    with tablet.client() as c:
        return c.post("/api/v1/sheets", json=sheet)


def test_judges_score_sign_off_the_tech_locks_and_results_turn_final(running_box: RunningBox) -> None:
    box = running_box
    tablets = {judge: box.pair(judge, f"{judge} tablet") for judge in PANEL}
    entries = [
        e["entry_id"] for s in tablets["J1"].event()["sessions"] if s["id"] == SESSION for e in s["entries"]
    ]
    assert len(entries) >= 3
    criteria = tablets["J1"].event()["criteria"]

    # Every judge of the panel scores every entry of the session.
    stored: dict[tuple[str, str], str] = {}
    for n, (judge, tablet) in enumerate(tablets.items()):
        sheets = [a_sheet(criteria, entry, i + n) for i, entry in enumerate(entries)]
        with tablet.client() as c:
            answer = c.post("/api/v1/sheets/batch", json={"sheets": sheets}).raise_for_status().json()
        assert [item["status"] for item in answer["results"]] == [201] * len(entries)
        stored.update({(judge, s["entry_id"]): s["sheet_id"] for s in sheets})

    with box.admin() as admin:
        scored = results(admin)
        assert {row["entry_id"] for row in rows(scored)} == set(entries)
        assert all(row["complete"] and row["provisional"] and not row["final"] for row in rows(scored))
        assert state(scored)["signed_off"] == [] and state(scored)["locked"] is False

    # Each judge signs off from their tablet: 200 with the sign-off, the same body again.
    first = sign_off(tablets["J1"])
    assert first.status_code == 200, first.text
    assert first.json()["session_id"] == SESSION and first.json()["judge_id"] == "J1"
    again = sign_off(tablets["J1"])
    assert again.status_code == 200 and again.content == first.content
    for judge in ("J2", "J3"):
        assert sign_off(tablets[judge]).status_code == 200

    # Off the judge's panel: 403; a session the event does not have: 404.
    j4 = box.pair("J4", "J4 tablet")
    off_panel = sign_off(j4)
    assert off_panel.status_code == 403
    assert off_panel.json()["type"] == "/problems/session-not-on-panel"
    assert sign_off(j4, "SAT-EVE").status_code == 404
    # The judge's download says the session is signed off.
    [am] = [s for s in tablets["J1"].event()["sessions"] if s["id"] == SESSION]
    assert am["signed_off_at"] == first.json()["signed_off_at"] and am["locked"] is False

    # A correction after the sign-off: 423 signed-off, single or in a batch; nothing stored.
    entry = entries[0]
    correction = a_sheet(criteria, entry, 7, supersedes=stored[("J1", entry)])
    refused = send(tablets["J1"], correction)
    assert refused.status_code == 423
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"] == "/problems/signed-off"
    assert "reopens the sign-off" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) > 0
    with tablets["J1"].client() as c:
        [item] = c.post("/api/v1/sheets/batch", json={"sheets": [correction]}).json()["results"]
    assert item["status"] == 423 and item["problem"]["type"] == "/problems/signed-off"

    with box.admin() as admin:
        signed = results(admin)
        assert state(signed)["signed_off"] == list(PANEL)
        # Every judge signed off, but the session is not locked: still provisional.
        assert all(row["provisional"] and not row["final"] for row in rows(signed))
        # A lock needs a reason.
        no_reason = admin.post(f"/admin/v1/sessions/{SESSION}/lock", json={"reason": ""})
        assert no_reason.status_code == 422
        assert admin.post(f"/admin/v1/sessions/{SESSION}/lock", json={}).status_code in (400, 422)

    # The tech locks from the CLI, which writes the database the running box uses.
    unknown = venuebox(box.config, "session", "lock", "SAT-EVE", "--reason", "awards")
    assert unknown.returncode != 0
    assert unknown.stderr.strip().count("\n") == 0 and "no session 'SAT-EVE'" in unknown.stderr
    locked = venuebox(box.config, "session", "lock", SESSION, "--reason", "awards at 12:30")
    assert locked.returncode == 0, locked.stderr
    assert "LOCKED" in locked.stdout and "FINAL" in locked.stdout

    with box.admin() as admin:
        final = results(admin)
        assert state(final)["locked"] is True and state(final)["locked_reason"] == "awards at 12:30"
        assert all(row["final"] and not row["provisional"] for row in rows(final))
        assert any(row["rank"] == 1 for row in rows(final))
    listed = venuebox(box.config, "session", "list")
    assert f"{SESSION}  LOCKED" in listed.stdout and "signed off 3 of 3" in listed.stdout

    # Locked wins over signed-off, at once, for every judge.
    assert send(tablets["J1"], correction).json()["type"] == "/problems/session-locked"
    j2_fix = a_sheet(criteria, entry, 3, supersedes=stored[("J2", entry)])
    assert send(tablets["J2"], j2_fix).status_code == 423

    # A protest: the tech unlocks (admin API, a reason), the results are provisional again.
    with box.admin() as admin:
        unlocked = admin.post(f"/admin/v1/sessions/{SESSION}/unlock", json={"reason": "protest on 101"})
        assert unlocked.status_code == 200 and unlocked.json()["locked"] is False
        assert all(row["provisional"] for row in rows(results(admin)))
    # J1's sign-off still holds: refused until the tech reopens it.
    assert send(tablets["J1"], correction).json()["type"] == "/problems/signed-off"
    with box.admin() as admin:
        not_signed = admin.post(
            f"/admin/v1/sessions/{SESSION}/reopen", json={"judge_id": "J4", "reason": "wrong judge"}
        )
        assert not_signed.status_code == 404
    reopened = venuebox(
        box.config, "session", "reopen", SESSION, "--judge", "J1", "--reason", "protest on 101"
    )
    assert reopened.returncode == 0, reopened.stderr
    accepted = send(tablets["J1"], correction)
    assert accepted.status_code == 201, accepted.text

    with box.admin() as admin:
        after = results(admin)
        assert state(after)["signed_off"] == ["J2", "J3"]
        [row] = [r for r in rows(after) if r["entry_id"] == entry]
        assert row["totals"]["J1"] == _total(criteria, 7)
        # J1 signs off again, the tech locks again: final once more.
        assert sign_off(tablets["J1"]).status_code == 200
        relock = admin.post(f"/admin/v1/sessions/{SESSION}/lock", json={"reason": "protest settled"})
        assert relock.status_code == 200 and relock.json()["signed_off"] == list(PANEL)
        assert all(r["final"] for r in rows(results(admin)))
        # Every step is in the audit chain, which travels to the cloud.
        actions = [a["action"] for a in admin.get("/admin/v1/audit", params={"limit": 100}).json()]
        session_actions = [a for a in reversed(actions) if a.startswith("session.")]
        assert session_actions == [
            *["session.sign_off"] * 3,
            "session.lock",
            "session.unlock",
            "session.reopen",
            "session.sign_off",
            "session.lock",
        ]
        assert admin.get("/admin/v1/verify").json()["ok"] is True


def _total(criteria: list[dict[str, Any]], offset: int) -> str:
    """The sheet total ``a_sheet`` makes for ``offset`` (weights 1, all scores), as exact text."""
    total = sum(
        (Decimal(repr(c["min"])) + Decimal(repr(c["step"])) * (5 + offset % 10) for c in criteria), Decimal(0)
    )
    return str(total)


def test_the_session_commands_refuse_in_one_line_and_change_nothing(tmp_path: Path) -> None:
    empty = make_box(tmp_path / "empty", package=None)
    no_event = venuebox(empty, "session", "lock", SESSION, "--reason", "awards")
    assert no_event.returncode == 1 and no_event.stderr.count("\n") == 1 and "no event" in no_event.stderr
    assert venuebox(empty, "session", "list").stdout.strip() == "no sessions: no event imported on this box"

    box = make_box(tmp_path / "box")  # the daemon stopped: the commands write the database themselves
    refusals = [
        ("lock", SESSION, "--reason", "  "),
        ("unlock", SESSION, "--reason", ""),
        ("lock", "SAT-EVE", "--reason", "awards"),
        ("reopen", SESSION, "--judge", "J1", "--reason", "never signed off"),
    ]
    for args in refusals:
        done = venuebox(box, "session", *args)
        assert done.returncode == 1, (args, done.stdout)
        assert done.stderr.startswith("venuebox: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert venuebox(box, "session", "lock", SESSION).returncode == 2  # --reason is required (usage)
    listed = json.loads(venuebox(box, "session", "list", "--json").stdout)
    assert [s["session_id"] for s in listed] == ["SAT-AM", "SAT-PM", "SUN-AM"]
    assert not any(s["locked"] or s["signed_off"] or s["final"] for s in listed)
    with contextlib.closing(sqlite3.connect(box.db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_log WHERE action LIKE 'session.%'").fetchone()[0] == 0
