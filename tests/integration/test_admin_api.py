"""The admin API over real HTTP: what the console and scripts rely on."""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.core import alerts
from appliance.core.storage import Store
from appliance.core.watchdog import WatchdogSettings, apply_disk_free
from tests.conftest import RunningBox, Tablet, make_box, panel_entries


def test_status_reports_event_tablets_sheets_and_outbox(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    with tablet.client() as c:
        c.post("/api/v1/heartbeat", json={"sent_at": "2026-03-14T10:42:07Z"}).raise_for_status()
        c.post("/api/v1/sheets", json=tablet.sheet_for(panel_entries(tablet.event())[0])).raise_for_status()
    with running_box.admin() as admin:
        status = admin.get("/admin/v1/status").json()
    assert status["event"]["id"] and status["event"]["entries"] > 0
    assert status["tablets"] == {"online": 1, "stale": 0, "offline": 0}
    assert status["sheets"]["total"] == 1 and status["sheets"]["last_5_min"] == 1
    # One sheet record, plus the audit records of the box's set-up and the pairing, all waiting
    # (no uplink is configured).
    conn = sqlite3.connect(running_box.config.db_path)
    kinds = dict(conn.execute("SELECT kind, count(*) FROM outbox GROUP BY kind").fetchall())
    conn.close()
    assert kinds["sheet"] == 1 and kinds["audit"] >= 1
    assert status["outbox"]["records"] == kinds["sheet"] + kinds["audit"]
    assert status["uplink"]["state"] == "not configured"
    assert status["uplink"]["backlog"] == status["outbox"]["records"]
    assert status["freeze"]["frozen"] is False


def test_revoke_verify_audit_and_judges(running_box: RunningBox) -> None:
    tablet = running_box.pair("J2")
    with running_box.admin() as admin:
        judges = admin.get("/admin/v1/judges").json()
        assert {j["judge_id"] for j in judges} >= {"J1", "J2"}
        revoked = admin.post(f"/admin/v1/devices/{tablet.pairing['device_id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert admin.post("/admin/v1/devices/nope/revoke").status_code == 404
        verify = admin.get("/admin/v1/verify").json()
        assert verify["ok"] is True and {c["table"] for c in verify["chains"]} == {"sheets", "audit_log"}
        actions = [row["action"] for row in admin.get("/admin/v1/audit", params={"limit": 5}).json()]
        assert actions[:3] == ["device.revoke", "device.pair", "pairing.code"]
        assert admin.post("/admin/v1/freeze", json={"reason": ""}).status_code == 422
        assert admin.post("/admin/v1/pairing-codes", json={"judge_id": "J404"}).status_code == 404
    with tablet.client() as c:
        assert c.get("/api/v1/event").status_code == 401


def test_heartbeat_history_is_bounded_per_device(tmp_path) -> None:
    box = RunningBox(make_box(tmp_path / "box", heartbeat_history_per_device=5)).start()
    try:
        tablet = box.pair("J1")
        with tablet.client() as c:
            for battery in range(12):
                c.post("/api/v1/heartbeat", json={"sent_at": "2026-03-14T10:42:07Z", "battery": battery})
    finally:
        box.stop()
    conn = sqlite3.connect(box.config.db_path)
    rows = [r[0] for r in conn.execute("SELECT battery FROM heartbeats ORDER BY id")]
    assert rows == [7, 8, 9, 10, 11]
    assert conn.execute("SELECT battery FROM presence").fetchone()[0] == 11


# -- the console's views ---------------------------------------------------------------------------
# The sample event's SAT-AM session: entries 101-120 in running order, panel J1 J2 J3 (J3 sits on
# every session, listed with "*").


def post_sheet(tablet: Tablet, entry_id: str, **fields: Any) -> dict[str, Any]:
    with tablet.client() as c:
        answer = c.post("/api/v1/sheets", json=tablet.sheet_for(entry_id, **fields))
    assert answer.status_code == 201, answer.text
    return answer.json()


def assert_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["status"] == status and problem["request_id"] == answer.headers["x-request-id"]
    return problem


def test_status_follows_the_current_session_as_sheets_arrive(running_box: RunningBox) -> None:
    j1, j2, j3 = (running_box.pair(j) for j in ("J1", "J2", "J3"))
    with running_box.admin() as admin:
        before = admin.get("/admin/v1/status").json()
        assert before["session"]["chosen_by"] in ("schedule", "first")
        assert before["session"]["missing_total"] == 0 and before["session"]["complete"] == 0

        post_sheet(j1, "101")
        session = admin.get("/admin/v1/status").json()["session"]
        assert (session["id"], session["chosen_by"]) == ("SAT-AM", "latest-sheet")
        assert (session["entries"], session["complete"], session["partial"], session["not_started"]) == (
            20,
            0,
            1,
            19,
        )
        assert session["missing"] == [
            {
                "entry_id": "101",
                "order": 1,
                "title": "La Vie en Rose",
                "kind": "partial",
                "missing_judges": [
                    {"id": "J2", "name": "Daniel O'Connor"},
                    {"id": "J3", "name": "Priya Raman"},
                ],
            }
        ]

        post_sheet(j2, "101")
        post_sheet(j3, "101")
        session = admin.get("/admin/v1/status").json()["session"]
        assert (session["complete"], session["partial"], session["missing_total"], session["missing"]) == (
            1,
            0,
            0,
            [],
        )

        post_sheet(j1, "103")  # 102 goes by unscored
        session = admin.get("/admin/v1/status").json()["session"]
        assert [(m["entry_id"], m["kind"]) for m in session["missing"]] == [
            ("102", "skipped"),
            ("103", "partial"),
        ]
        assert [j["id"] for j in session["missing"][0]["missing_judges"]] == ["J1", "J2", "J3"]
        assert session["missing_total"] == 2


def test_status_carries_the_clock_urls_alerts_disk_and_placeholders(running_box: RunningBox) -> None:
    with running_box.admin() as admin:
        before = datetime.now(UTC)
        status = admin.get("/admin/v1/status").json()
    server_time = datetime.fromisoformat(status["server_time"].replace("Z", "+00:00"))
    assert abs((server_time - before).total_seconds()) < 5
    assert status["box"]["tablet_urls"] == [running_box.tablet_url]
    assert status["freeze"] == {"frozen": False, "reason": None, "since": None, "by": None, "category": None}
    assert set(status["alerts_active"]) == {"info", "warning", "critical"}
    assert isinstance(status["alerts_top"], list)
    disk = status["disk"]
    assert disk["path"] == str(running_box.config.data_dir)
    assert 0 < disk["free_mb"] <= disk["total_mb"] and 0 <= disk["used_pct"] <= 100
    assert status["backup"]["configured"] is False and status["backup"]["last"] is None  # none taken yet
    assert status["backup"]["kept"] == 0 and status["backup"]["recipients"] == 0
    assert status["uplink"]["state"] == "not configured" and status["uplink"]["target"] is None
    # Every key the status had before the console needed more is still there.
    assert {"event", "tablets", "sheets", "audit", "outbox"} <= set(status)


def test_devices_say_online_after_a_heartbeat_and_revoked_after_a_revoke(running_box: RunningBox) -> None:
    quiet, beating = running_box.pair("J1", "quiet tablet"), running_box.pair("J2", "beating tablet")
    with beating.client() as c:
        c.post("/api/v1/heartbeat", json={"sent_at": datetime.now(UTC).isoformat()}).raise_for_status()
    with running_box.admin() as admin:
        devices = {d["name"]: d for d in admin.get("/admin/v1/devices").json()}
        assert devices["quiet tablet"]["presence"] == "offline"
        assert devices["quiet tablet"]["last_seen_age_s"] is None
        assert devices["beating tablet"]["presence"] == "online"
        assert 0 <= devices["beating tablet"]["last_seen_age_s"] < 10
        assert devices["beating tablet"]["battery"] is None  # the existing fields stay

        admin.post(f"/admin/v1/devices/{beating.pairing['device_id']}/revoke").raise_for_status()
        devices = {d["name"]: d for d in admin.get("/admin/v1/devices").json()}
        assert devices["beating tablet"]["presence"] == "revoked"
        assert devices["beating tablet"]["last_seen_age_s"] >= 0
        active = admin.get("/admin/v1/devices", params={"include_revoked": "false"}).json()
        assert [d["device_id"] for d in active] == [quiet.pairing["device_id"]]


def test_sessions_list_panels_and_progress_in_position_order(running_box: RunningBox) -> None:
    post_sheet(running_box.pair("J3"), "121")
    with running_box.admin() as admin:
        sessions = admin.get("/admin/v1/sessions").json()
    assert [(s["id"], s["position"], s["entries"]) for s in sessions] == [
        ("SAT-AM", 1, 20),
        ("SAT-PM", 2, 20),
        ("SUN-AM", 3, 20),
    ]
    assert sessions[1] == {
        "id": "SAT-PM",
        "name": "Saturday afternoon",
        "stage": "Main Stage",
        "starts_at": sessions[1]["starts_at"],
        "position": 2,
        "entries": 20,
        "judges": [
            {"id": "J1", "name": "Marisol Vega"},
            {"id": "J3", "name": "Priya Raman"},
            {"id": "J4", "name": "Étienne Lavoie"},
        ],
        "complete": 0,
        "partial": 1,
        "not_started": 19,
    }


def test_grid_cells_are_scored_missing_or_corrected(running_box: RunningBox) -> None:
    j1, j2 = running_box.pair("J1"), running_box.pair("J2")
    original = post_sheet(j1, "101")
    post_sheet(j1, "101", supersedes=original["sheet_id"])
    post_sheet(j2, "101")
    with running_box.admin() as admin:
        answer = admin.get("/admin/v1/sessions/SAT-AM/grid")
        assert_problem(admin.get("/admin/v1/sessions/NOPE/grid"), 404)
    grid = answer.json()
    assert grid["session"]["id"] == "SAT-AM" and grid["session"]["name"] == "Saturday morning"
    assert [j["id"] for j in grid["judges"]] == ["J1", "J2", "J3"]
    assert [e["entry_id"] for e in grid["entries"]] == [str(n) for n in range(101, 121)]
    assert grid["entries"][0] == {
        "entry_id": "101",
        "order": 1,
        "title": "La Vie en Rose",
        "category": "Solo",
        "division": "Senior",
        "studio": "Northside Dance Collective",
        "cells": ["corrected", "scored", "missing"],
    }
    assert grid["entries"][1]["cells"] == ["missing", "missing", "missing"]
    # Participants are personal data: never in a console view (101 is Naomi Roy's solo).
    assert "participants" not in answer.text and "Naomi Roy" not in answer.text


def test_sheet_feed_with_and_without_after(running_box: RunningBox) -> None:
    with running_box.admin() as admin:
        assert admin.get("/admin/v1/sheets").json() == {"sheets": [], "last_seq": 0}
    j1 = running_box.pair("J1")
    stored = [post_sheet(j1, e) for e in ("101", "102", "103")]
    with running_box.admin() as admin:
        last_two = admin.get("/admin/v1/sheets", params={"limit": 2}).json()
        after_first = admin.get("/admin/v1/sheets", params={"after": stored[0]["seq"]}).json()
        caught_up = admin.get("/admin/v1/sheets", params={"after": stored[2]["seq"]}).json()
        assert_problem(admin.get("/admin/v1/sheets", params={"after": "yesterday"}), 422)
    assert [s["sheet_id"] for s in last_two["sheets"]] == [s["sheet_id"] for s in stored[1:]]
    assert [s["seq"] for s in after_first["sheets"]] == [stored[1]["seq"], stored[2]["seq"]]
    assert last_two["last_seq"] == after_first["last_seq"] == caught_up["last_seq"] == stored[2]["seq"]
    assert caught_up["sheets"] == []
    sheet = last_two["sheets"][-1]
    assert {k: sheet[k] for k in ("entry_id", "entry_title", "session_id", "judge_id", "judge_name")} == {
        "entry_id": "103",
        "entry_title": "Niña Bonita",
        "session_id": "SAT-AM",
        "judge_id": "J1",
        "judge_name": "Marisol Vega",
    }
    assert sheet["device_id"] == j1.pairing["device_id"] and sheet["supersedes"] is None
    assert sheet["received_at"] == stored[2]["received_at"]
    assert sheet["total"] == pytest.approx(sum(sheet["values"].values()))
    assert set(sheet) == {
        "seq",
        "sheet_id",
        "entry_id",
        "entry_title",
        "session_id",
        "judge_id",
        "judge_name",
        "device_id",
        "values",
        "total",
        "comment",
        "submitted_at",
        "received_at",
        "supersedes",
    }


def test_an_entry_shows_each_judges_chain_from_original_to_head(running_box: RunningBox) -> None:
    j1, j3 = running_box.pair("J1"), running_box.pair("J3")
    original = post_sheet(j1, "101")
    fix = post_sheet(j1, "101", supersedes=original["sheet_id"], comment="typo")
    head = post_sheet(j1, "101", supersedes=fix["sheet_id"])
    post_sheet(j3, "101")
    with running_box.admin() as admin:
        answer = admin.get("/admin/v1/entries/101")
        assert_problem(admin.get("/admin/v1/entries/999"), 404)
    detail = answer.json()
    assert detail["entry"] == {
        "entry_id": "101",
        "session_id": "SAT-AM",
        "order": 1,
        "title": "La Vie en Rose",
        "category": "Solo",
        "division": "Senior",
        "level": "Competitive",
        "studio": "Northside Dance Collective",
    }
    assert [(j["id"], len(j["chain"])) for j in detail["judges"]] == [("J1", 3), ("J2", 0), ("J3", 1)]
    chain = detail["judges"][0]["chain"]
    assert [s["sheet_id"] for s in chain] == [original["sheet_id"], fix["sheet_id"], head["sheet_id"]]
    assert [s["supersedes"] for s in chain] == [None, original["sheet_id"], fix["sheet_id"]]
    assert [s["current"] for s in chain] == [False, False, True]
    assert [s["hash"] for s in chain] == [original["hash"], fix["hash"], head["hash"]]
    assert chain[1]["comment"] == "typo" and chain[1]["total"] == pytest.approx(
        sum(chain[1]["values"].values())
    )
    assert detail["judges"][2]["chain"][0]["current"] is True
    assert "participants" not in answer.text and "Naomi Roy" not in answer.text


def test_alerts_list_and_acknowledge_including_a_fingerprint_with_a_colon(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    offline = f"tablet-offline:{uuid.uuid4()}"
    with Store(config.db_path) as store:
        store.write_sync(
            lambda c: alerts.raise_alert(c, offline, "warning", "J1's tablet is offline", "No heartbeat")
        )
        store.write_sync(lambda c: alerts.raise_alert(c, "gone:1", "info", "Came and went", ""))
        store.write_sync(lambda c: alerts.clear_alert(c, "gone:1"))
    box = RunningBox(config).start()
    try:
        with box.admin() as admin:
            listed = {a["fingerprint"]: a for a in admin.get("/admin/v1/alerts").json()}
            everything = {a["fingerprint"] for a in admin.get("/admin/v1/alerts?include_cleared=true").json()}
            status = admin.get("/admin/v1/status").json()
            acked = admin.post(f"/admin/v1/alerts/{offline}/ack")
            again = admin.post(f"/admin/v1/alerts/{offline.replace(':', '%3A')}/ack")
            unknown = admin.post("/admin/v1/alerts/tablet-offline:nobody/ack")
            audit_rows = admin.get("/admin/v1/audit", params={"action": "alert.acknowledge"}).json()
    finally:
        box.stop()
    assert offline in listed and "gone:1" not in listed and {offline, "gone:1"} <= everything
    assert listed[offline]["active"] is True and listed[offline]["acknowledged_at"] is None
    assert status["alerts_active"]["warning"] >= 1
    assert offline in {a["fingerprint"] for a in status["alerts_top"]}
    assert acked.status_code == 200, acked.text
    assert acked.json()["fingerprint"] == offline and acked.json()["acknowledged_by"] == "admin-api"
    assert again.status_code == 200 and again.json()["acknowledged_at"] == acked.json()["acknowledged_at"]
    assert "nobody" in assert_problem(unknown, 404)["detail"]
    assert [row["actor"] for row in audit_rows] == ["admin-api"]


def test_freeze_category_is_stored_shown_and_audited(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    with running_box.admin() as admin:
        frozen = admin.post(
            "/admin/v1/freeze", json={"reason": "protest on entry 103", "category": "dispute"}
        )
        assert frozen.status_code == 200, frozen.text
        assert frozen.json()["category"] == "dispute" and frozen.json()["reason"] == "protest on entry 103"
        status = admin.get("/admin/v1/status").json()
        assert (status["freeze"]["frozen"], status["freeze"]["category"]) == (True, "dispute")
        audit_row = admin.get("/admin/v1/audit", params={"action": "freeze"}).json()[0]
        assert json.loads(audit_row["detail"]) == {"reason": "protest on entry 103", "category": "dispute"}
        with tablet.client() as c:
            beat = c.post("/api/v1/heartbeat", json={"sent_at": datetime.now(UTC).isoformat()}).json()
            refused = c.post("/api/v1/sheets", json=tablet.sheet_for("101"))
        assert beat["freeze_reason"] == "protest on entry 103"
        assert refused.status_code == 423 and refused.json()["detail"] == "protest on entry 103"

        unfrozen = admin.post("/admin/v1/unfreeze").json()
        assert (unfrozen["frozen"], unfrozen["category"]) == (False, None)
        assert admin.get("/admin/v1/status").json()["freeze"]["category"] is None
        assert (
            admin.post("/admin/v1/freeze", json={"reason": "scoreboard down"}).json()["category"] == "other"
        )


def test_a_bad_freeze_category_is_422_and_changes_nothing(running_box: RunningBox) -> None:
    with running_box.admin() as admin:
        audit_before = admin.get("/admin/v1/status").json()["audit"]
        bad = admin.post("/admin/v1/freeze", json={"reason": "protest", "category": "politics"})
        problem = assert_problem(bad, 422)
        message = "must be one of anomaly, dispute, other, tabulation, technical, not 'politics'"
        assert problem["errors"] == [{"field": "category", "message": message}]
        status = admin.get("/admin/v1/status").json()
    assert status["freeze"] == {"frozen": False, "reason": None, "since": None, "by": None, "category": None}
    assert status["audit"] == audit_before


def test_the_cli_freezes_with_a_category_and_refuses_unknown_ones(running_box: RunningBox) -> None:
    cli = [sys.executable, "-m", "appliance", "--data-dir", str(running_box.config.data_dir), "freeze"]
    bad = subprocess.run(
        [*cli, "--reason", "x", "--category", "politics"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "politics" in bad.stderr
    done = subprocess.run(
        [*cli, "--reason", "tabulator asks", "--category", "tabulation"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    with running_box.admin() as admin:
        freeze = admin.get("/admin/v1/status").json()["freeze"]
    assert (freeze["reason"], freeze["category"], freeze["by"]) == ("tabulator asks", "tabulation", "cli")


def test_an_automatic_freeze_by_the_watchdog_is_technical(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    with Store(config.db_path) as store:  # the watchdog's reading of a nearly full disk
        store.write_sync(lambda c: apply_disk_free(c, WatchdogSettings(), 10.0, datetime.now(UTC)))
    box = RunningBox(config).start()
    try:
        with box.admin() as admin:
            freeze = admin.get("/admin/v1/status").json()["freeze"]
    finally:
        box.stop()
    assert (freeze["frozen"], freeze["by"], freeze["category"]) == (True, "watchdog", "technical")


def test_a_pairing_code_comes_with_a_url_that_pairs_a_tablet(running_box: RunningBox) -> None:
    with running_box.admin() as admin:
        code = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J4"}).json()
    assert code["url"] == f"{running_box.tablet_url}/?pair={code['code']}"
    url = httpx.URL(code["url"])
    with httpx.Client(base_url=f"{url.scheme}://{url.host}:{url.port}", timeout=10) as c:
        paired = c.post("/api/v1/pair", json={"code": url.params["pair"], "device_name": "from the QR code"})
    assert paired.status_code == 201, paired.text
    assert paired.json()["judge"] == {"id": "J4", "name": "Étienne Lavoie"}


def test_with_mdns_the_tablet_urls_lead_with_the_advertised_host_name(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box", mdns_enabled=True)).start()
    try:
        runtime = json.loads((box.config.data_dir / "daemon.json").read_text())
        with box.admin() as admin:
            status = admin.get("/admin/v1/status").json()
            code = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J1"}).json()
    finally:
        box.stop()
    port = httpx.URL(box.tablet_url).port
    urls = status["box"]["tablet_urls"]
    assert urls == runtime["tablet_urls"]
    first = httpx.URL(urls[0])
    assert first.host.endswith(".local") and first.port == port  # "test-box.local", no trailing dot
    assert len(urls) >= 2
    for url in map(httpx.URL, urls[1:]):
        assert ipaddress.ip_address(url.host) and url.port == port
    assert code["url"] == f"{urls[0]}/?pair={code['code']}"


def test_no_admin_answer_is_stored_by_a_cache(running_box: RunningBox) -> None:
    """Admin answers carry pairing codes, device and judge names, and participants' names (masked,
    or in full when revealed): ``Cache-Control: no-store`` on every one."""
    running_box.pair("J1", "Judge 1 iPad")
    with running_box.admin() as admin:
        answers = {
            "new code": admin.post("/admin/v1/pairing-codes", json={"judge_id": "J2"}),
            "codes": admin.get("/admin/v1/pairing-codes"),
            "devices": admin.get("/admin/v1/devices"),
            "status": admin.get("/admin/v1/status"),
            "participants": admin.get("/admin/v1/entries/101/participants"),
            "participants revealed": admin.post(
                "/admin/v1/entries/101/participants/reveal", json={"reason": "protest on entry 101"}
            ),
            "personal": admin.get("/admin/v1/entries/101/personal"),
            "personal revealed": admin.post(
                "/admin/v1/entries/101/personal/reveal",
                json={"field": "participants", "reason": "protest on entry 101"},
            ),
        }
    assert answers["participants revealed"].json()["participants"] == ["Naomi Roy"]
    assert "Judge 1 iPad" in answers["devices"].text and answers["new code"].json()["code"]
    for what, answer in answers.items():
        assert answer.status_code in (200, 201), (what, answer.text)
        assert answer.headers["cache-control"] == "no-store", what
