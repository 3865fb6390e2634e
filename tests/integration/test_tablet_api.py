"""The tablet protocol against a real `venuebox run` process over real HTTP."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningBox, Tablet, make_box, panel_entries, venuebox
from tests.personal_package import personal_package


def competition_state(box: RunningBox) -> dict[str, Any]:
    """Row counts of every competition table and both chain heads: what a rejection must not change."""
    conn = sqlite3.connect(box.config.db_path)
    try:
        state: dict[str, Any] = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("sheets", "outbox", "entries", "judges", "criteria", "sessions", "events")
        }
        for table in ("sheets", "audit_log"):
            row = conn.execute(f"SELECT hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
            state[f"{table}_head"] = row[0] if row else None
        return state
    finally:
        conn.close()


def off_panel_entry(box: RunningBox, tablet: Tablet) -> str:
    conn = sqlite3.connect(box.config.db_path)
    try:
        row = conn.execute(
            "SELECT e.entry_id FROM entries e WHERE e.session_id NOT IN "
            "(SELECT session_id FROM panels WHERE judge_id = ?) LIMIT 1",
            (tablet.judge_id,),
        ).fetchone()
        assert row, "the sample event should have a session this judge does not score"
        return row[0]
    finally:
        conn.close()


def partial_judge(box: RunningBox) -> str:
    """A judge who does not sit on every session."""
    conn = sqlite3.connect(box.config.db_path)
    try:
        return conn.execute(
            "SELECT judge_id FROM panels GROUP BY judge_id "
            "HAVING count(*) < (SELECT count(*) FROM sessions) ORDER BY judge_id LIMIT 1"
        ).fetchone()[0]
    finally:
        conn.close()


def test_pair_event_sheet_correction_heartbeat(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1", "Judge 1 iPad")
    assert tablet.pairing["judge"]["id"] == "J1" and tablet.pairing["event"]["id"]
    with tablet.client() as c:
        event = c.get("/api/v1/event")
        assert event.status_code == 200
        etag = event.headers["etag"]
        assert c.get("/api/v1/event", headers={"If-None-Match": etag}).status_code == 304
        # RFC 9110's weak comparison: a tag a proxy weakened, one of a list, or "*" still match.
        for matching in (f"W/{etag}", f'"other", {etag}', "*"):
            assert c.get("/api/v1/event", headers={"If-None-Match": matching}).status_code == 304, matching
        assert c.get("/api/v1/event", headers={"If-None-Match": '"other"'}).status_code == 200
        body = event.json()
        assert body["criteria"] and any(s["on_panel"] for s in body["sessions"])
        assert "participants" not in str(body)

        entry = panel_entries(body)[0]
        sheet = tablet.sheet_for(entry, comment="clean lines, «bravo» 👏")
        first = c.post("/api/v1/sheets", json=sheet)
        assert first.status_code == 201, first.text
        assert first.json()["sheet_id"] == sheet["sheet_id"]
        assert first.headers["x-request-id"]

        # The event's ETag changes once the judge has a sheet, and the sheet is in the download.
        after = c.get("/api/v1/event", headers={"If-None-Match": etag})
        assert after.status_code == 200
        assert [s["sheet_id"] for s in after.json()["sheets"]] == [sheet["sheet_id"]]

        correction = tablet.sheet_for(entry, supersedes=sheet["sheet_id"])
        corrected = c.post("/api/v1/sheets", json=correction)
        assert corrected.status_code == 201, corrected.text
        assert corrected.json()["supersedes"] == sheet["sheet_id"]
        current = c.get("/api/v1/event").json()["sheets"]
        assert [s["sheet_id"] for s in current] == [correction["sheet_id"]]

        # Correcting the old sheet again is a fork: 409 naming the current head.
        stale = c.post("/api/v1/sheets", json=tablet.sheet_for(entry, supersedes=sheet["sheet_id"]))
        assert stale.status_code == 409
        assert stale.json()["current_sheet_id"] == correction["sheet_id"]

        beat = c.post(
            "/api/v1/heartbeat",
            json={
                "sent_at": "2026-03-14T10:42:07-05:00",
                "battery": 81,
                "app_version": "web-1.0",
                "queue_depth": 0,
            },
        )
        assert beat.status_code == 200, beat.text
        assert beat.json()["frozen"] is False and beat.json()["next_heartbeat_s"] == 10
    with running_box.admin() as admin:
        devices = admin.get("/admin/v1/devices").json()
        assert devices[0]["battery"] == 81 and devices[0]["app_version"] == "web-1.0"


def test_replaying_a_sheet_ten_times_stores_it_once(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    entry = panel_entries(tablet.event())[1]
    sheet = tablet.sheet_for(entry)
    with tablet.client() as c:
        answers = [c.post("/api/v1/sheets", json=sheet) for _ in range(10)]
    assert [a.status_code for a in answers] == [201] + [200] * 9
    assert len({a.content for a in answers}) == 1
    conn = sqlite3.connect(running_box.config.db_path)
    assert (
        conn.execute("SELECT count(*) FROM sheets WHERE sheet_id = ?", (sheet["sheet_id"],)).fetchone()[0]
        == 1
    )
    assert conn.execute("SELECT count(*) FROM outbox WHERE kind = 'sheet'").fetchone()[0] == 1


def test_twenty_concurrent_submissions_of_one_sheet_store_one_row(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    entry = panel_entries(tablet.event())[2]
    sheet = tablet.sheet_for(entry)

    def send(_: int) -> httpx.Response:
        with tablet.client() as c:
            return c.post("/api/v1/sheets", json=sheet)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(send, range(20)))
    assert sorted(a.status_code for a in answers) == [200] * 19 + [201]
    assert len({a.content for a in answers}) == 1, "every answer carries the same body"
    conn = sqlite3.connect(running_box.config.db_path)
    assert conn.execute("SELECT count(*) FROM sheets").fetchone()[0] == 1


def test_second_original_for_entry_and_judge_is_409(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    entry = panel_entries(tablet.event())[0]
    first = tablet.sheet_for(entry)
    with tablet.client() as c:
        assert c.post("/api/v1/sheets", json=first).status_code == 201
        second = c.post("/api/v1/sheets", json=tablet.sheet_for(entry))
    assert second.status_code == 409
    problem = second.json()
    assert second.headers["content-type"].startswith("application/problem+json")
    assert problem["current_sheet_id"] == first["sheet_id"]
    assert problem["request_id"] == second.headers["x-request-id"]


def test_same_sheet_id_with_other_content_is_422_mismatch(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    entry = panel_entries(tablet.event())[0]
    sheet = tablet.sheet_for(entry)
    with tablet.client() as c:
        assert c.post("/api/v1/sheets", json=sheet).status_code == 201
        changed = {**sheet, "comment": "changed my mind"}
        answer = c.post("/api/v1/sheets", json=changed)
    assert answer.status_code == 422
    assert answer.json()["type"].endswith("/idempotency-mismatch")


def test_every_rejection_leaves_the_competition_tables_unchanged(running_box: RunningBox) -> None:
    judge = partial_judge(running_box)
    tablet = running_box.pair(judge)
    entry = panel_entries(tablet.event())[0]
    stored = tablet.sheet_for(entry)
    with tablet.client() as c:
        assert c.post("/api/v1/sheets", json=stored).status_code == 201
    before = competition_state(running_box)
    good = tablet.sheet_for(panel_entries(tablet.event())[1])
    criterion = next(iter(good["values"]))
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (
            "malformed JSON",
            {"content": b'{"sheet_id": ', "headers": tablet.headers},
            400,
            "malformed-request",
        ),
        ("empty body", {"content": b"", "headers": tablet.headers}, 400, "malformed-request"),
        ("not a uuid", {"json": {**good, "sheet_id": "42"}, "headers": tablet.headers}, 422, "invalid-input"),
        (
            "bad time",
            {"json": {**good, "submitted_at": "yesterday"}, "headers": tablet.headers},
            422,
            "invalid-input",
        ),
        (
            "out of range",
            {"json": {**good, "values": {**good["values"], criterion: 11}}, "headers": tablet.headers},
            422,
            "invalid-input",
        ),
        (
            "a number beyond a float",  # msgspec refuses 1e400 where JSON allows it
            {
                "content": json.dumps({**good, "values": {**good["values"], criterion: "BIG"}})
                .replace('"BIG"', "1e400")
                .encode(),
                "headers": {**tablet.headers, "Content-Type": "application/json"},
            },
            422,
            "invalid-input",
        ),
        (
            "off step",
            {"json": {**good, "values": {**good["values"], criterion: 0.123}}, "headers": tablet.headers},
            422,
            "invalid-input",
        ),
        (
            "missing criterion",
            {"json": {**good, "values": {}}, "headers": tablet.headers},
            422,
            "invalid-input",
        ),
        ("unknown field", {"json": {**good, "score": 3}, "headers": tablet.headers}, 422, "invalid-input"),
        (
            "comment too long",
            {"json": {**good, "comment": "x" * 2001}, "headers": tablet.headers},
            422,
            "invalid-input",
        ),
        (
            "unknown entry",
            {"json": {**good, "entry_id": "no-such-entry"}, "headers": tablet.headers},
            422,
            "unknown-entry",
        ),
        (
            "off panel",
            {"json": {**good, "entry_id": off_panel_entry(running_box, tablet)}, "headers": tablet.headers},
            403,
            "not-on-panel",
        ),
        ("no token", {"json": good}, 401, "unauthenticated"),
        (
            "bad token",
            {"json": good, "headers": {"Authorization": "Bearer not-a-token"}},
            401,
            "unauthenticated",
        ),
        (
            "second original",
            {"json": {**tablet.sheet_for(entry)}, "headers": tablet.headers},
            409,
            "sheet-conflict",
        ),
        (
            "too large",
            {"content": b'{"comment": "' + b"x" * 2_000_000 + b'"}', "headers": tablet.headers},
            413,
            "payload-too-large",
        ),
    ]
    with httpx.Client(base_url=running_box.tablet_url, timeout=10) as c:
        for name, request, status, slug in cases:
            answer = c.post("/api/v1/sheets", **request)
            assert answer.status_code == status, (name, answer.text)
            problem = answer.json()
            assert answer.headers["content-type"].startswith("application/problem+json"), name
            assert problem["type"].endswith("/" + slug), (name, problem)
            assert problem["status"] == status and problem["title"] and problem["detail"], name
            assert problem["request_id"] == answer.headers["x-request-id"], name
            if status == 422 and slug == "invalid-input":
                assert problem["errors"] and all(e["field"] and e["message"] for e in problem["errors"]), name
    assert competition_state(running_box) == before


def test_field_errors_name_the_field(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    good = tablet.sheet_for(panel_entries(tablet.event())[0])
    criterion = next(iter(good["values"]))
    with tablet.client() as c:
        answer = c.post("/api/v1/sheets", json={**good, "values": {**good["values"], criterion: 99}})
        assert answer.json()["errors"][0]["field"] == f"values.{criterion}"
        answer = c.post("/api/v1/heartbeat", json={"sent_at": "2026-03-14T10:42:07Z", "battery": 101})
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "battery"
        answer = c.post("/api/v1/sheets", json={k: v for k, v in good.items() if k != "entry_id"})
        assert answer.json()["errors"][0]["field"] == "entry_id"


def test_a_box_with_a_lower_comment_limit_refuses_a_longer_comment_as_the_default_box_does(
    tmp_path: Path, running_box: RunningBox
) -> None:
    def problem_of(answer: httpx.Response) -> dict[str, Any]:
        assert answer.status_code == 422, answer.text
        return {k: v for k, v in answer.json().items() if k not in ("request_id", "instance")}

    tablet = running_box.pair("J1")
    entry = panel_entries(tablet.event())[0]
    with tablet.client() as c:
        today = problem_of(c.post("/api/v1/sheets", json=tablet.sheet_for(entry, comment="x" * 2001)))
    strict = RunningBox(make_box(tmp_path / "strict", comment_max_chars=10)).start()
    try:
        tablet = strict.pair("J1")
        with tablet.client() as c:
            refused = problem_of(c.post("/api/v1/sheets", json=tablet.sheet_for(entry, comment="x" * 11)))
            long_one = tablet.sheet_for(entry, comment="x" * 11)
            batch = c.post("/api/v1/sheets/batch", json={"sheets": [long_one]})
            stored = c.post("/api/v1/sheets", json=tablet.sheet_for(entry, comment="x" * 10))
    finally:
        strict.stop()
    said = "must have at most 10 characters"
    errors = [{"field": "comment", "message": said}]
    assert refused == {**today, "detail": f"comment: {said}", "errors": errors}
    assert today["errors"] == [{"field": "comment", "message": "must have at most 2000 characters"}]
    [item] = batch.json()["results"]
    assert item["status"] == 422 and item["problem"]["errors"] == refused["errors"]
    assert stored.status_code == 201, stored.text


def test_request_id_is_echoed_or_generated(running_box: RunningBox) -> None:
    with running_box.client() as c:
        assert (
            c.get("/api/v1/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
        )
        generated = c.get("/api/v1/health").headers["x-request-id"]
        assert len(generated) >= 16
        missing = c.get("/api/v1/nowhere")
        assert missing.status_code == 404 and missing.json()["request_id"] == missing.headers["x-request-id"]


def test_batch_answers_each_item_as_the_single_call_would(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    entries = panel_entries(tablet.event())
    good = [tablet.sheet_for(e) for e in entries[:3]]
    bad_value = {**tablet.sheet_for(entries[3]), "values": {}}
    unknown = tablet.sheet_for("no-such-entry")
    with tablet.client() as c:
        assert c.post("/api/v1/sheets", json=good[0]).status_code == 201
        answer = c.post(
            "/api/v1/sheets/batch", json={"sheets": [good[0], good[1], bad_value, unknown, good[2], good[1]]}
        )
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r["status"] for r in results] == [200, 201, 422, 422, 201, 200]
        assert [r["sheet_id"] for r in results] == [
            good[0]["sheet_id"],
            good[1]["sheet_id"],
            bad_value["sheet_id"],
            unknown["sheet_id"],
            good[2]["sheet_id"],
            good[1]["sheet_id"],
        ]
        assert results[3]["problem"]["type"].endswith("/unknown-entry")
        too_many = c.post("/api/v1/sheets/batch", json={"sheets": [good[0]] * 501})
        assert too_many.status_code == 422
        # A score beyond a float (valid JSON, 1e400) in one item: that item is told why, as alone.
        huge = tablet.sheet_for(entries[4])
        first = next(iter(huge["values"]))
        body = json.dumps({"sheets": [{**huge, "values": {**huge["values"], first: "BIG"}}]})
        beyond = c.post(
            "/api/v1/sheets/batch",
            content=body.replace('"BIG"', "1e400").encode(),
            headers={"Content-Type": "application/json"},
        )
        assert beyond.status_code == 200, beyond.text
        [item] = beyond.json()["results"]
        assert item["status"] == 422 and item["sheet_id"] == huge["sheet_id"]
        assert item["problem"]["errors"] == [{"field": f"values.{first}", "message": "is out of range"}]
    conn = sqlite3.connect(running_box.config.db_path)
    assert conn.execute("SELECT count(*) FROM sheets").fetchone()[0] == 3


def test_freeze_blocks_every_write_but_not_reads_or_heartbeats(running_box: RunningBox) -> None:
    tablets = [running_box.pair(j) for j in ("J1", "J2")]
    with running_box.admin() as admin:
        frozen = admin.post("/admin/v1/freeze", json={"reason": "dispute on entry 12"})
        assert frozen.status_code == 200 and frozen.json()["frozen"] is True
    before = competition_state(running_box)
    jobs = [(t, t.sheet_for(e)) for t in tablets for e in panel_entries(t.event())[:10]]

    def send(job: tuple[Tablet, dict[str, Any]]) -> httpx.Response:
        tablet, sheet = job
        with tablet.client() as c:
            return c.post("/api/v1/sheets", json=sheet)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, jobs))
    assert len(answers) == 20
    assert {a.status_code for a in answers} == {423}
    assert all(a.json()["detail"] == "dispute on entry 12" for a in answers)
    assert all(int(a.headers["retry-after"]) > 0 for a in answers)
    with tablets[0].client() as c:
        batch = c.post("/api/v1/sheets/batch", json={"sheets": [s for t, s in jobs if t is tablets[0]][:3]})
        assert batch.status_code == 423 and batch.json()["detail"] == "dispute on entry 12"
        assert int(batch.headers["retry-after"]) > 0
        assert c.get("/api/v1/event").status_code == 200
        beat = c.post("/api/v1/heartbeat", json={"sent_at": "2026-03-14T10:42:07Z"}).json()
        assert beat["frozen"] is True and beat["freeze_reason"] == "dispute on entry 12"
    assert competition_state(running_box)["sheets"] == before["sheets"] == 0
    with running_box.admin() as admin:
        assert admin.post("/admin/v1/unfreeze").json()["frozen"] is False
    assert send(jobs[0]).status_code == 201


def test_freeze_from_the_cli_takes_effect_on_the_running_server_within_a_second(
    running_box: RunningBox,
) -> None:
    tablet = running_box.pair("J1")
    entries = panel_entries(tablet.event())
    cli = [sys.executable, "-m", "appliance", "--data-dir", str(running_box.config.data_dir)]
    done = subprocess.run(
        [*cli, "freeze", "--reason", "technical: scoreboard down"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    frozen_at = time.monotonic()
    with tablet.client() as c:
        answer = c.post("/api/v1/sheets", json=tablet.sheet_for(entries[0]))
        assert answer.status_code == 423 and time.monotonic() - frozen_at < 1.0
        assert c.get("/api/v1/health").json()["frozen"] is True
        assert subprocess.run([*cli, "unfreeze"], capture_output=True, timeout=30).returncode == 0
        assert c.post("/api/v1/sheets", json=tablet.sheet_for(entries[0])).status_code == 201
    audit = (
        sqlite3.connect(running_box.config.db_path)
        .execute(
            "SELECT actor, action, detail FROM audit_log WHERE action IN ('freeze', 'unfreeze') ORDER BY seq"
        )
        .fetchall()
    )
    assert audit == [
        ("cli", "freeze", '{"category":"other","reason":"technical: scoreboard down"}'),
        ("cli", "unfreeze", '{"was":"technical: scoreboard down"}'),
    ]


def test_pairing_code_is_single_use_and_wrong_codes_look_the_same(running_box: RunningBox) -> None:
    with running_box.admin() as admin:
        code = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J2"}).json()["code"]
    with running_box.client() as c:
        assert c.post("/api/v1/pair", json={"code": code.lower(), "device_name": "t"}).status_code == 201
        used = c.post("/api/v1/pair", json={"code": code, "device_name": "t"})
        wrong = c.post("/api/v1/pair", json={"code": "ZZZZ-ZZZZ", "device_name": "t"})
    assert used.status_code == wrong.status_code == 403
    assert used.json()["detail"] == wrong.json()["detail"]


def test_expired_code_is_refused(tmp_path) -> None:
    from tests.conftest import new_code

    config = make_box(tmp_path / "box")
    code = new_code(config, "J1", ttl_s=10)
    conn = sqlite3.connect(config.db_path)
    with conn:
        conn.execute("UPDATE pairing_codes SET expires_at = '2000-01-01T00:00:00.000000Z'")
    conn.close()
    box = RunningBox(config).start()
    try:
        with box.client() as c:
            assert c.post("/api/v1/pair", json={"code": code, "device_name": "t"}).status_code == 403
    finally:
        box.stop()


def test_pairing_is_throttled_per_address(tmp_path) -> None:
    box = RunningBox(make_box(tmp_path / "box", pair_attempts_per_minute=5)).start()
    try:
        with box.client() as c:
            answers = [
                c.post("/api/v1/pair", json={"code": f"AAAA-AAA{i}", "device_name": "x"}) for i in range(8)
            ]
        assert [a.status_code for a in answers[:5]] == [403] * 5
        assert {a.status_code for a in answers[5:]} == {429}
        assert int(answers[-1].headers["retry-after"]) >= 1
    finally:
        box.stop()


def test_device_rate_limit_answers_429_with_retry_after(tmp_path) -> None:
    box = RunningBox(make_box(tmp_path / "box", device_rate_per_s=1.0, device_burst=3)).start()
    try:
        tablet = box.pair("J1")
        with tablet.client() as c:
            statuses = [
                c.post("/api/v1/heartbeat", json={"sent_at": "2026-03-14T10:42:07Z"}) for _ in range(6)
            ]
        assert statuses[0].status_code == 200
        limited = [s for s in statuses if s.status_code == 429]
        assert limited and int(limited[0].headers["retry-after"]) >= 1
        assert limited[0].json()["type"].endswith("/rate-limited")
    finally:
        box.stop()


def test_revoked_device_gets_401_at_once(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    with tablet.client() as c:
        assert c.post("/api/v1/heartbeat", json={"sent_at": "2026-03-14T10:42:07Z"}).status_code == 200
        cli = [sys.executable, "-m", "appliance", "--data-dir", str(running_box.config.data_dir)]
        done = subprocess.run(
            [*cli, "devices", "revoke", tablet.pairing["device_id"]],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        answer = c.post("/api/v1/heartbeat", json={"sent_at": "2026-03-14T10:42:07Z"})
        assert answer.status_code == 401
        assert c.get("/api/v1/event").status_code == 401


def test_tokens_are_stored_only_as_hashes(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    raw = running_box.config.db_path.read_bytes()
    for suffix in ("-wal", ""):
        path = running_box.config.db_path.with_name(running_box.config.db_path.name + suffix)
        if path.exists():
            raw += path.read_bytes()
    assert tablet.pairing["token"].encode() not in raw


def test_admin_api_refuses_tablet_tokens_and_missing_tokens(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    with httpx.Client(base_url=running_box.admin_url, timeout=10) as c:
        assert c.get("/admin/v1/status").status_code == 401
        assert c.get("/admin/v1/status", headers=tablet.headers).status_code == 401
    with httpx.Client(base_url=running_box.tablet_url, timeout=10) as c:
        assert c.get("/admin/v1/status", headers=tablet.headers).status_code == 404


def test_openapi_documents_every_status(running_box: RunningBox) -> None:
    with running_box.client() as c:
        doc = c.get("/schema/openapi.json").json()
    sheets = doc["paths"]["/api/v1/sheets"]["post"]
    assert {"200", "201", "400", "401", "403", "409", "413", "422", "423", "429", "503"} <= set(
        sheets["responses"]
    )
    assert sheets["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/SheetIn")
    assert doc["paths"]["/api/v1/pair"]["post"]["responses"]["403"]
    assert "SheetIn" in doc["components"]["schemas"]
    assert "/admin/v1/status" not in doc["paths"]


@pytest.mark.parametrize("path", ["/api/v1/health"])
def test_health_reports_box_and_event(running_box: RunningBox, path: str) -> None:
    with running_box.client() as c:
        health = c.get(path).json()
    assert health["status"] == "ok" and health["box"].startswith("vb-") and health["event"]
    assert health["frozen"] is False and health["version"]


def test_sigterm_exits_zero_and_keeps_every_sheet(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    entry = panel_entries(tablet.event())[0]
    with tablet.client() as c:
        assert c.post("/api/v1/sheets", json=tablet.sheet_for(entry)).status_code == 201
    assert running_box.stop() == 0
    assert not (running_box.config.data_dir / "daemon.json").exists()
    conn = sqlite3.connect(running_box.config.db_path)
    assert conn.execute("SELECT count(*) FROM sheets").fetchone()[0] == 1
    assert uuid.UUID(conn.execute("SELECT sheet_id FROM sheets").fetchone()[0])


def test_answers_carrying_a_token_or_names_are_never_stored_by_a_cache(tmp_path: Path) -> None:
    """Pairing and rotation carry the judge's token, the event the judge's name and sheets and
    here participants' names: ``Cache-Control: no-store`` on each, the 304 included."""
    package = personal_package(tmp_path / "package", tablets_see_participants=True)
    box = RunningBox(make_box(tmp_path / "box", package=package)).start()
    try:
        with box.admin() as admin:
            code = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J1"}).json()["code"]
        with box.client() as client:
            paired = client.post("/api/v1/pair", json={"code": code, "device_name": "Judge 1 iPad"})
        assert paired.status_code == 201 and paired.json()["token"]
        assert paired.headers["cache-control"] == "no-store"
        tablet = Tablet(box, paired.json())
        with tablet.client() as client:
            event = client.get("/api/v1/event")
            assert event.status_code == 200 and "Naomi Roy" in event.text
            assert event.headers["cache-control"] == "no-store"
            again = client.get("/api/v1/event", headers={"If-None-Match": event.headers["etag"]})
            assert again.status_code == 304 and again.headers["cache-control"] == "no-store"
            rotated = client.post("/api/v1/token")
        assert rotated.status_code == 200 and rotated.json()["token"]
        assert rotated.headers["cache-control"] == "no-store"
    finally:
        box.stop()


ESCAPE_AND_OVERRIDE = [
    "Judge 1\x1b[2J",  # clears the tech's screen
    "iPad\x1b]0;box owned\x07",  # retitles the terminal
    "iPad \u202eenohp",  # right-to-left override: reads as "iPad phone" backwards
    "iPad \u2066x\u2069",  # isolates
    "C1 \x9b31m",  # an 8-bit CSI
    "two\nlines",
    "iPad\n",  # a new line at the end too
    "a\ttab",
    "del\x7f",
]


@pytest.mark.parametrize("name", ESCAPE_AND_OVERRIDE)
def test_a_device_name_with_control_or_bidi_characters_is_refused_naming_the_field(
    running_box: RunningBox, name: str
) -> None:
    with running_box.admin() as admin:
        code = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J1"}).json()["code"]
    with running_box.client() as client:
        refused = client.post("/api/v1/pair", json={"code": code, "device_name": name})
        assert refused.status_code == 422, refused.text
        problem = refused.json()
        assert problem["type"] == "/problems/invalid-input"
        assert [e["field"] for e in problem["errors"]] == ["device_name"]
        assert "control characters" in problem["errors"][0]["message"]
        # Refused before the code was looked at: the judge types a plain name and pairs with it.
        paired = client.post("/api/v1/pair", json={"code": code, "device_name": "Judge 1 iPad"})
    assert paired.status_code == 201, paired.text
    conn = sqlite3.connect(running_box.config.db_path)
    try:
        assert [r[0] for r in conn.execute("SELECT name FROM devices")] == ["Judge 1 iPad"]
    finally:
        conn.close()


def test_text_a_tablet_sends_is_refused_with_control_or_bidi_characters(running_box: RunningBox) -> None:
    """The app version is one line; a comment may hold new lines and tabs as a judge types them,
    but no other control character (a carriage return included) and no bidi override."""
    tablet = running_box.pair("J1")
    entries = panel_entries(tablet.event())
    beat = {"sent_at": "2026-03-14T10:42:07Z"}
    with tablet.client() as client:
        refused = client.post("/api/v1/heartbeat", json={**beat, "app_version": "1.0\x1b[8m"})
        assert refused.status_code == 422 and [e["field"] for e in refused.json()["errors"]] == [
            "app_version"
        ]
        for comment in ("clean\x1b[31m", "ok\r\nok", "score \u202e01", "a\x85b", "line\u2028break"):
            sheet = client.post("/api/v1/sheets", json=tablet.sheet_for(entries[0], comment=comment))
            assert sheet.status_code == 422, (comment, sheet.text)
            assert [e["field"] for e in sheet.json()["errors"]] == ["comment"], comment
        # A batch item is refused alone; its neighbour is stored.
        bad = tablet.sheet_for(entries[0], comment="\x1b[2J")
        good = tablet.sheet_for(entries[1], comment="Clean lines.\n\tLanding: «bravo» 👏 שלום")
        batch = client.post("/api/v1/sheets/batch", json={"sheets": [bad, good]}).json()["results"]
        assert [r["status"] for r in batch] == [422, 201] and batch[0]["sheet_id"] == bad["sheet_id"]
        assert batch[0]["problem"]["errors"][0]["field"] == "comment"
        assert client.post("/api/v1/heartbeat", json={**beat, "app_version": "web 0.1.0"}).status_code == 200
    conn = sqlite3.connect(running_box.config.db_path)
    try:
        assert [r[0] for r in conn.execute("SELECT comment FROM sheets")] == [good["comment"]]
    finally:
        conn.close()


def test_the_cli_prints_a_stored_device_name_escaped(running_box: RunningBox) -> None:
    """A row written before the API refused such names (put straight into the SQLite file here)
    prints with its escape sequences and bidi override as \\uXXXX, in the list and in --json."""
    tablet = running_box.pair("J1")
    device_id = tablet.pairing["device_id"]
    name = "A\x1b[2J\u202eB\x07"
    conn = sqlite3.connect(running_box.config.db_path)
    try:
        with conn:
            conn.execute("UPDATE devices SET name = ? WHERE device_id = ?", (name, device_id))
    finally:
        conn.close()
    listed = venuebox(running_box.config, "devices")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith(device_id))
    assert "A\\u001b[2J\\u202eB\\u0007" in line
    as_json = venuebox(running_box.config, "devices", "--json")
    assert as_json.returncode == 0, as_json.stderr
    # Still JSON that reads back to the name as stored.
    assert [d["name"] for d in json.loads(as_json.stdout)] == [name]
    revoked = venuebox(running_box.config, "devices", "revoke", device_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "A\\u001b[2J\\u202eB\\u0007" in revoked.stdout
    for done in (listed, as_json, revoked):
        assert not {"\x1b", "\x07", "\u202e"} & set(done.stdout), done.stdout
