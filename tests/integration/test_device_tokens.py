"""Device tokens expire and can be rotated: over real HTTP against a running box, and the expiry rule
on a real database."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance.core.devices import token_expiry
from appliance.core.storage import Store
from appliance.shared.times import parse_rfc3339, to_rfc3339
from tests.conftest import RunningBox, make_box


def test_a_rotated_token_replaces_the_old_one_at_once(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    old = tablet.pairing["token"]
    assert parse_rfc3339(tablet.pairing["token_expires_at"]) > datetime.now(UTC) + timedelta(hours=23)
    with running_box.client() as client:
        assert client.get("/api/v1/event", headers={"Authorization": f"Bearer {old}"}).status_code == 200
        rotated = client.post("/api/v1/token", headers={"Authorization": f"Bearer {old}"})
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["token"]
        assert new != old and rotated.json()["device_id"] == tablet.pairing["device_id"]
        refused = client.get("/api/v1/event", headers={"Authorization": f"Bearer {old}"})
        assert refused.status_code == 401
        assert client.get("/api/v1/event", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    with running_box.admin() as admin:
        assert admin.get("/admin/v1/audit", params={"action": "device.rotate"}).json()
    conn = sqlite3.connect(running_box.config.db_path)
    try:
        stored = conn.execute("SELECT token_hash FROM devices").fetchall()
    finally:
        conn.close()
    assert all(new not in row[0] and old not in row[0] for row in stored)  # hashes only


def test_an_expired_token_is_refused_with_a_reason_even_when_remembered(running_box: RunningBox) -> None:
    tablet = running_box.pair("J2")
    token = tablet.pairing["token"]
    sheet = tablet.sheet_for("101")
    with running_box.client() as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/event", headers=headers).status_code == 200  # now remembered
        conn = sqlite3.connect(running_box.config.db_path)
        with conn:
            past = to_rfc3339(datetime.now(UTC) - timedelta(seconds=1))
            conn.execute(
                "UPDATE devices SET expires_at = ? WHERE device_id = ?", (past, tablet.pairing["device_id"])
            )
        conn.close()
        refused = client.post("/api/v1/sheets", json=sheet, headers=headers)
        assert refused.status_code == 401
        assert "expired" in refused.json()["detail"] and refused.json()["request_id"]


def test_tokens_last_until_the_end_of_the_event_and_at_least_a_day(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    with Store(config.db_path) as store:
        event_id, last_start = store.query(
            lambda c: c.execute("SELECT event_id, max(starts_at) FROM sessions").fetchone()
        )
        end = parse_rfc3339(last_start) + timedelta(hours=12)
        before = end - timedelta(days=5)
        assert store.query(lambda c: token_expiry(c, event_id, before)) == end
        after = end + timedelta(days=30)  # the sample event is long over: a day from now
        assert store.query(lambda c: token_expiry(c, event_id, after)) == after + timedelta(hours=24)
        assert store.query(lambda c: token_expiry(c, event_id, before, ttl_h=2)) == before + timedelta(
            hours=2
        )
