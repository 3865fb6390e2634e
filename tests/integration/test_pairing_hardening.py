"""Pairing against a hostile venue LAN, on a real daemon over real HTTP and the real CLI: a box-wide
budget of failed pairing attempts (many source addresses, each under its own limit), its alert
raised and cleared; pairing codes live at most pairing_code_max_ttl_s; codes are stored as an
HMAC under the box's pairing key, which a restored box keeps."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.core import keys
from appliance.core.config import load_config
from appliance.core.pairing import active_codes, normalise_code
from appliance.core.storage import Store
from appliance.core.storage.schema import m010_pairing_codes_keyed
from appliance.shared.secrets_files import read_secret
from appliance.shared.times import to_rfc3339, utcnow
from tests.conftest import TIMEOUT, RunningBox, make_box, new_code, venuebox, wait_for

pytestmark = pytest.mark.timeout(120)


def rows(config: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(config.db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def from_address(box: RunningBox, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.0.0.0/8 address is this machine on
    Linux): as many tablets, or one guesser, on as many addresses."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=box.tablet_url, timeout=TIMEOUT, transport=transport)


def flood_alert(box: RunningBox) -> dict[str, Any] | None:
    with box.admin() as admin:
        listed = admin.get("/admin/v1/alerts", params={"include_cleared": True}).raise_for_status().json()
    return next((a for a in listed if a["fingerprint"] == "pairing-flood"), None)


# -- the box-wide budget of failed attempts --------------------------------------------------------


def test_wrong_codes_from_many_addresses_spend_the_box_wide_budget_raise_an_alert_that_clears(
    tmp_path: Path,
) -> None:
    # 30 failures a minute box-wide; each address keeps the default 10 a minute and never reaches it.
    config = make_box(tmp_path / "box", pair_failures_per_minute_box=30, pair_flood_calm_s=1.0)
    box = RunningBox(config).start()
    try:
        answers: list[httpx.Response] = []
        clients = {f"127.0.0.{n}": from_address(box, f"127.0.0.{n}") for n in range(2, 10)}
        try:
            for attempt in range(4):
                for address, client in clients.items():
                    wrong = {"code": f"ZZZZ-ZZ{attempt}{address[-1]}", "device_name": "guesser"}
                    answers.append(client.post("/api/v1/pair", json=wrong))
        finally:
            for client in clients.values():
                client.close()
        statuses = [a.status_code for a in answers]
        assert statuses[:30] == [403] * 30, statuses
        limited = [a for a in answers if a.status_code == 429]
        assert limited, statuses
        first = limited[0]
        assert first.headers["content-type"] == "application/problem+json"
        assert first.json()["type"].endswith("/rate-limited")
        assert "on this box" in first.json()["detail"] and "address" in first.json()["detail"]
        assert int(first.headers["retry-after"]) >= 1
        assert first.json()["request_id"] == first.headers["x-request-id"]

        # A judge's right code, from an address that never failed, is told to come back too; nothing
        # is stored for it.
        code = new_code(config, "J1")
        with from_address(box, "127.0.0.20") as judge:
            refused = judge.post("/api/v1/pair", json={"code": code, "device_name": "judge 1"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert rows(config, "SELECT count(*) FROM devices") == [(0,)]

        alert = flood_alert(box)
        assert alert is not None and alert["active"] and alert["severity"] == "warning"
        assert "127.0.0." in alert["detail"]

        # Calm again: the watchdog clears the alert, and the same code pairs.
        wait_for("the pairing-flood alert to clear", lambda: not (flood_alert(box) or {}).get("active"))
        time.sleep(int(refused.headers["retry-after"]))
        with from_address(box, "127.0.0.20") as judge:
            paired = judge.post("/api/v1/pair", json={"code": code, "device_name": "judge 1"})
        assert paired.status_code == 201, paired.text
        cleared = flood_alert(box)
        assert cleared is not None and cleared["cleared_at"] is not None
    finally:
        box.stop()


# -- the lifetime of a code is capped --------------------------------------------------------------


def test_pair_new_refuses_a_ttl_over_the_cap_in_one_line_and_stores_nothing(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    refused = venuebox(config, "pair", "new", "--judge", "J1", "--ttl", str(24 * 3600 + 1))
    assert refused.returncode != 0
    [line] = refused.stderr.strip().splitlines()
    assert "pairing_code_max_ttl_s" in line and "86401" in line, line
    assert refused.stdout == ""
    assert rows(config, "SELECT count(*) FROM pairing_codes") == [(0,)]
    assert rows(config, "SELECT count(*) FROM audit_log WHERE action = 'pairing.code'") == [(0,)]

    # A lower cap, as a tech sets it, is the one enforced; the cap itself is allowed.
    lower = {"VENUEBOX_PAIRING_CODE_MAX_TTL_S": "3600"}
    assert venuebox(config, "pair", "new", "--judge", "J1", "--ttl", "3601", env=lower).returncode != 0
    assert rows(config, "SELECT count(*) FROM pairing_codes") == [(0,)]
    made = venuebox(config, "pair", "new", "--judge", "J1", "--ttl", "3600", env=lower)
    assert made.returncode == 0, made.stderr
    assert rows(config, "SELECT count(*) FROM pairing_codes") == [(1,)]


def test_the_admin_api_refuses_a_ttl_over_the_cap_with_a_422_problem(running_box: RunningBox) -> None:
    with running_box.admin() as admin:
        refused = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J1", "ttl_s": 2 * 24 * 3600})
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["errors"][0]["field"] == "ttl_s" and "pairing_code_max_ttl_s" in problem["detail"]
        assert rows(running_box.config, "SELECT count(*) FROM pairing_codes") == [(0,)]
        made = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J1", "ttl_s": 24 * 3600})
        assert made.status_code == 201, made.text


# -- codes are stored keyed with the box's secret --------------------------------------------------


def test_a_code_is_stored_as_an_hmac_under_the_box_key_not_its_sha256_and_still_pairs(
    running_box: RunningBox,
) -> None:
    config = running_box.config
    key_file = config.data_dir / keys.PAIRING_KEY
    assert key_file.stat().st_mode & 0o777 == 0o600  # made by `venuebox init`
    with running_box.admin() as admin:
        made = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J2"}).raise_for_status()
    code = made.json()["code"]
    [(stored,)] = rows(config, "SELECT code_hash FROM pairing_codes")
    plain = normalise_code(code).encode()
    assert stored != hashlib.sha256(plain).hexdigest()
    assert stored == hmac.new(keys.pairing_key(config), plain, hashlib.sha256).hexdigest()
    with running_box.client() as client:
        paired = client.post("/api/v1/pair", json={"code": code, "device_name": "judge 2"})
    assert paired.status_code == 201, paired.text


def test_a_box_from_an_older_venuebox_gets_its_key_on_first_use_and_its_old_codes_expire(
    tmp_path: Path,
) -> None:
    config = make_box(tmp_path / "box")
    # The data dir and database as an older venuebox left them: no pairing key, the last migration
    # not applied, and a code waiting, stored as a bare SHA-256.
    (config.data_dir / keys.PAIRING_KEY).unlink()
    old_code = "ABCD-EFGH"
    later = to_rfc3339(utcnow() + timedelta(days=1))
    conn = sqlite3.connect(config.db_path)
    with conn:
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = ?", (m010_pairing_codes_keyed.__name__,))
        conn.execute(
            "INSERT INTO pairing_codes (code_id, code_hash, event_id, judge_id, created_at, expires_at)"
            " SELECT 'old-code', ?, event_id, 'J1', ?, ? FROM box",
            (hashlib.sha256(b"ABCDEFGH").hexdigest(), to_rfc3339(utcnow()), later),
        )
    conn.close()

    made = venuebox(config, "pair", "new", "--judge", "J1")
    assert made.returncode == 0, made.stderr
    new = made.stdout.strip().splitlines()[-1]
    assert (config.data_dir / keys.PAIRING_KEY).stat().st_mode & 0o777 == 0o600
    with Store(config.db_path) as store:  # the upgrade expired the old code: no longer listed
        assert len(listed := store.query(active_codes)) == 1 and listed[0].code_id != "old-code"
    box = RunningBox(config).start()
    try:
        with box.client() as client:
            assert client.post("/api/v1/pair", json={"code": old_code, "device_name": "t"}).status_code == 403
            assert client.post("/api/v1/pair", json={"code": new, "device_name": "t"}).status_code == 201
    finally:
        box.stop()


def test_a_restored_box_accepts_the_codes_issued_before_its_snapshot(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    code = new_code(config, "J3")
    taken = venuebox(config, "backup", "now")
    assert taken.returncode == 0, taken.stderr
    [snapshot] = config.backup_path.glob("snapshot-*.sqlite.age")
    target = tmp_path / "restored"
    restored = venuebox(config, "restore", str(snapshot), "--to", str(target))
    assert restored.returncode == 0, restored.stderr
    assert read_secret(target / keys.PAIRING_KEY) == read_secret(config.data_dir / keys.PAIRING_KEY)
    assert (target / keys.PAIRING_KEY).stat().st_mode & 0o777 == 0o600
    box = RunningBox(load_config(target, environ={})).start()
    try:
        with box.client() as client:
            paired = client.post("/api/v1/pair", json={"code": code, "device_name": "judge 3"})
        assert paired.status_code == 201, paired.text
    finally:
        box.stop()
