"""The admin API over real HTTP: what the console and scripts rely on."""

from __future__ import annotations

import sqlite3

from tests.conftest import RunningBox, make_box, panel_entries


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
    assert status["outbox"]["records"] == 1
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
