"""The reference uplink receiver as a real process (`venuebox ingest-server run`), over real HTTP."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlite_utils import Database

from tests.receiver_process import BOX, RunningReceiver, add_box, audit_record, cli, record
from uplink import receiver_store
from uplink.protocol import (
    IDEMPOTENCY_HEADER,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    SIGNATURE_HEADER,
    SIGNATURE_TOLERANCE_S,
)

OTHER_BOX = "vb-000000000002"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[RunningReceiver, str]]:
    data_dir = tmp_path / "receiver"
    token = add_box(data_dir, BOX)
    running = RunningReceiver(data_dir).start()
    yield running, token
    running.stop()


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


def test_signed_batch_is_stored_and_acked_in_order(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    ids = [f"r{i}" for i in range(5)]
    response = rx.post(token, [record(i) for i in ids])
    assert response.status_code == 200, response.text
    assert response.json() == {"acked": ids, "rejected": []}
    assert rx.stored_ids() == ids


def test_resent_batch_with_a_new_key_acks_the_same_ids_and_stores_nothing_new(
    receiver: tuple[RunningReceiver, str],
) -> None:
    rx, token = receiver
    batch = [record(f"r{i}") for i in range(3)]
    first = rx.post(token, batch).json()
    again = rx.post(token, batch).json()
    assert again == first == {"acked": ["r0", "r1", "r2"], "rejected": []}
    assert rx.stored_ids() == ["r0", "r1", "r2"]


def test_concurrent_overlapping_batches_store_each_id_exactly_once(
    receiver: tuple[RunningReceiver, str],
) -> None:
    rx, token = receiver
    # 20 batches of 50 over ids 0..249: each id is in up to 4 batches, sent at the same time.
    batches = [[record(f"r{i:04d}") for i in range(n * 10, n * 10 + 50)] for n in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda batch: rx.post(token, batch), batches))
    for batch, answer in zip(batches, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["acked"] == [r["id"] for r in batch]
    stored = rx.stored_ids()
    assert len(stored) == len(set(stored)) == 240
    assert set(stored) == {f"r{i:04d}" for i in range(240)}


def test_same_key_and_body_replays_the_identical_answer(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    body = json.dumps({"records": [record("a"), record("b", kind="nope")]}).encode()
    first = rx.post(token, body=body, key="batch-1")
    replay = rx.post(token, body=body, key="batch-1")
    assert first.status_code == replay.status_code == 200
    assert replay.content == first.content
    assert rx.metric('venuebox_receiver_batches_total{outcome="replayed"}') == 1


def test_only_a_2xx_answer_is_replayed_for_a_repeated_key(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    # Refusals leave nothing under the key (docs/protocol.md, "Repeated keys"): the same body is
    # judged again, not replayed, and another body is a new batch, not an idempotency mismatch.
    shape = json.dumps({"records": [record("a")], "extra": True}).encode()
    too_many = [record(f"r{i}") for i in range(MAX_BATCH_RECORDS + 1)]
    for _ in range(2):
        assert assert_problem(rx.post(token, body=shape, key="k-1"), 422)["type"] == "/problems/invalid-input"
        refused = rx.post(token, too_many, key="k-1")
        assert assert_problem(refused, 413)["type"] == "/problems/batch-too-large"
        stale = rx.post(
            token, [record("a")], key="k-1", signed_at=int(time.time()) - 2 * SIGNATURE_TOLERANCE_S
        )
        assert assert_problem(stale, 401)["type"] == "/problems/signature-clock-skew"
    assert rx.metric("venuebox_receiver_batches_total") == 0
    stored = rx.post(token, [record("a")], key="k-1")
    assert stored.status_code == 200 and stored.json() == {"acked": ["a"], "rejected": []}
    replay = rx.post(token, [record("a")], key="k-1")
    assert (replay.status_code, replay.content) == (200, stored.content)
    assert rx.metric('venuebox_receiver_batches_total{outcome="replayed"}') == 1
    conn = sqlite3.connect(rx.data_dir / "receiver.sqlite")
    try:
        assert conn.execute("SELECT idempotency_key FROM batches").fetchall() == [("k-1",)]
    finally:
        conn.close()


def test_same_key_with_another_body_is_an_idempotency_mismatch(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    assert rx.post(token, [record("a")], key="batch-1").status_code == 200
    problem = assert_problem(rx.post(token, [record("b")], key="batch-1"), 422)
    assert problem["type"].endswith("/idempotency-mismatch")
    assert rx.stored_ids() == ["a"]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"kind": "score"}, "kind:"),
        ({"created_at": "yesterday"}, "created_at:"),
        ({"id": None}, "id:"),
        ({"payload": "text"}, "payload:"),
        ({"payload": {"sheet_id": "s"}}, "payload.seq:"),
        ({"payload": {"seq": 0, "hash": "0" * 64}}, "payload.seq:"),
        ({"payload": {"seq": 3, "hash": "not-a-hash"}}, "payload.hash:"),
    ],
)
def test_one_bad_record_is_rejected_alone(
    receiver: tuple[RunningReceiver, str], bad: dict[str, Any], reason: str
) -> None:
    rx, token = receiver
    poison = record("bad", **bad)
    if bad.get("id", "") is None:
        del poison["id"]
    answer = rx.post(token, [record("a"), poison, record("c")])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["acked"] == ["a", "c"]
    [rejected] = body["rejected"]
    assert rejected["id"] == ("" if "id" in bad else "bad")
    assert rejected["status"] == 422
    assert rejected["reason"].startswith(reason)
    assert rx.stored_ids() == ["a", "c"]


@pytest.mark.parametrize(
    "how",
    [
        "wrong token",
        "another box's token",
        "no token",
        "no signature",
        "stale",
        "body changed",
        "bad signature",
    ],
)
def test_refused_credentials_are_401_and_store_nothing(
    receiver: tuple[RunningReceiver, str], how: str
) -> None:
    rx, token = receiver
    other_token = add_box(rx.data_dir, OTHER_BOX)
    records = [record("a")]
    body = json.dumps({"records": records}).encode()
    cases: dict[str, dict[str, Any]] = {
        "wrong token": {"token": token[:-4] + "AAAA"},
        "another box's token": {"token": other_token},
        "no token": {"headers": {"Authorization": ""}},
        "no signature": {"headers": {SIGNATURE_HEADER: ""}},
        "stale": {"signed_at": int(time.time()) - SIGNATURE_TOLERANCE_S - 60},
        "body changed": {"signed_body": body.replace(b'"a"', b'"z"')},
        "bad signature": {"sign_with": other_token},
    }
    bent = cases[how]
    response = rx.post(bent.pop("token", token), body=body, **bent)
    problem = assert_problem(response, 401)
    slug = "signature-clock-skew" if how == "stale" else "uplink-unauthenticated"
    assert problem["type"].endswith("/" + slug)
    assert response.headers["www-authenticate"].startswith("Bearer")
    if how == "stale":
        assert "clock" in problem["detail"]
    if how == "body changed":
        assert "does not match" in problem["detail"]
    assert token not in response.text and other_token not in response.text
    assert rx.stored_ids() == []
    assert rx.stored_ids(OTHER_BOX) == []


def test_unknown_box_is_401(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    assert_problem(rx.post(token, [record("a")], box_id="vb-nobody"), 401)
    assert rx.metric('venuebox_receiver_auth_failures_total{reason="unknown-box"}') == 1


def test_batch_without_idempotency_key_is_400(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    problem = assert_problem(rx.post(token, [record("a")], headers={IDEMPOTENCY_HEADER: ""}), 400)
    assert IDEMPOTENCY_HEADER in problem["detail"]
    assert rx.stored_ids() == []


def test_body_over_the_byte_limit_is_413(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    big = record("big", payload={"blob": "x" * MAX_BATCH_BYTES})
    assert_problem(rx.post(token, [big]), 413)
    assert rx.stored_ids() == []


def test_too_many_records_is_413(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    problem = assert_problem(rx.post(token, [record(f"r{i}") for i in range(MAX_BATCH_RECORDS + 1)]), 413)
    assert problem["type"].endswith("/batch-too-large")
    assert rx.stored_ids() == []


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"records": [}'])
def test_malformed_json_is_400(receiver: tuple[RunningReceiver, str], body: bytes) -> None:
    rx, token = receiver
    assert_problem(rx.post(token, body=body), 400)


def test_get_records_pages_in_order(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    ids = [f"r{i:02d}" for i in range(25)]
    rx.post(token, [record(i) for i in ids[:10]])
    rx.post(token, [record(i) for i in ids[10:]])
    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        page = rx.records(token, after=after, limit=7).raise_for_status().json()
        if not page["records"]:
            assert page["last_seq"] == after
            break
        seen += page["records"]
        after = page["last_seq"]
        assert after == page["records"][-1]["seq"]
    assert [r["id"] for r in seen] == ids
    assert [r["seq"] for r in seen] == sorted(r["seq"] for r in seen)
    assert seen[0]["payload"] == record("r00")["payload"]
    assert set(seen[0]) == {"seq", "id", "kind", "created_at", "payload", "received_at"}


def test_get_records_needs_the_box_token(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    other_token = add_box(rx.data_dir, OTHER_BOX)
    rx.post(token, [record("a")])
    assert_problem(rx.records(other_token), 401)
    assert_problem(rx.records("", box_id=BOX), 401)
    assert rx.records(other_token, box_id=OTHER_BOX).json() == {"records": [], "last_seq": 0}
    assert_problem(rx.records(token, limit=5001), 422)


def test_add_box_writes_a_private_token_file_and_refuses_a_second_token(tmp_path: Path) -> None:
    data_dir = tmp_path / "receiver"
    token_file = tmp_path / "uplink.token"
    done = cli(data_dir, "add-box", BOX, "--token-file", str(token_file))
    assert done.returncode == 0, done.stderr
    token = token_file.read_text().strip()
    assert len(token) == 43 and token not in done.stdout
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / "boxes.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    again = cli(data_dir, "add-box", BOX)
    assert again.returncode == 1
    assert "--rotate" in again.stderr
    assert json.loads((data_dir / "boxes.json").read_text()) == {BOX: token}


def test_rotated_token_replaces_the_old_one_on_a_running_receiver(
    receiver: tuple[RunningReceiver, str],
) -> None:
    rx, old = receiver
    assert rx.post(old, [record("a")]).status_code == 200
    new = add_box(rx.data_dir, BOX, "--rotate")
    assert new != old
    assert_problem(rx.post(old, [record("b")]), 401)
    assert rx.post(new, [record("b")]).status_code == 200
    assert rx.stored_ids() == ["a", "b"]


def test_metrics_count_stored_duplicate_and_rejected(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    rx.post(token, [record("a"), record("b")])
    rx.post(token, [record("b"), record("c"), record("d", kind="nope")])
    rx.post(token, [record("a")], sign_with="not-the-token")
    assert rx.metric("venuebox_receiver_records_stored_total") == 3
    assert rx.metric("venuebox_receiver_records_duplicate_total") == 1
    assert rx.metric("venuebox_receiver_records_rejected_total") == 1
    assert rx.metric('venuebox_receiver_batches_total{outcome="stored"}') == 2
    assert rx.metric('venuebox_receiver_auth_failures_total{reason="bad-signature"}') == 1
    with rx.client() as client:
        assert token not in client.get("/metrics").text


def test_health_needs_no_auth_and_the_log_holds_no_secrets(receiver: tuple[RunningReceiver, str]) -> None:
    rx, token = receiver
    with rx.client() as client:
        assert client.get("/health").json()["status"] == "ok"
    rx.post(token, [record("secret-payload-record", payload={"note": "do-not-log-me"})])
    rx.post(token[:-1] + "x", [record("x")])
    assert rx.stop() == 0
    log = (rx.data_dir / "receiver.log").read_text()
    assert token not in log and "do-not-log-me" not in log and "v1=" not in log
    assert not (rx.data_dir / "receiver.json").exists()
    assert os.path.exists(rx.data_dir / "receiver.sqlite")


# -- no forks: one sheet per ledger seq of a box -----------------------------------------------------


def sheet_hash(sheet: str) -> str:
    return record("-", sheet=sheet)["payload"]["hash"]


def receiver_rows(rx: RunningReceiver, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(rx.data_dir / "receiver.sqlite")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_a_different_sheet_at_a_held_ledger_seq_is_a_fork_and_nothing_of_its_batch_is_stored(
    receiver: tuple[RunningReceiver, str],
) -> None:
    rx, token = receiver
    assert rx.post(token, [record("a", seq=1), record("b", seq=2)]).status_code == 200
    forking = [record("c", seq=3), record("audit-1", kind="audit"), record("x", seq=2, sheet="another")]
    refused = rx.post(token, forking, key="batch-2")
    problem = assert_problem(refused, 409)
    assert problem["type"] == "/problems/chain-fork"
    assert (
        problem["chain"],
        problem["seq"],
        problem["held_hash"],
        problem["offered_hash"],
        problem["record_id"],
    ) == (
        "sheets",
        2,
        sheet_hash("b"),
        sheet_hash("another"),
        "x",
    )
    assert "ledger seq 2" in problem["detail"] and sheet_hash("b") in problem["detail"]
    assert sheet_hash("another") in problem["detail"]
    # Nothing of the batch: not its good records, not its answer under the key.
    assert rx.stored_ids() == ["a", "b"]
    assert receiver_rows(rx, "SELECT seq, hash FROM chain_places WHERE chain = 'sheets' ORDER BY seq") == [
        (1, sheet_hash("a")),
        (2, sheet_hash("b")),
    ]
    assert receiver_rows(rx, "SELECT idempotency_key FROM batches WHERE idempotency_key = 'batch-2'") == []
    # Sent again, it is judged again (refused again), not replayed.
    assert_problem(rx.post(token, forking, key="batch-2"), 409)
    # The corrected batch under the same key is a new batch, not an idempotency mismatch.
    corrected = rx.post(token, forking[:2], key="batch-2")
    assert corrected.status_code == 200, corrected.text
    assert corrected.json() == {"acked": ["c", "audit-1"], "rejected": []}
    assert rx.stored_ids() == ["a", "b", "c", "audit-1"]
    assert rx.metric("venuebox_receiver_chain_forks_total") == 2
    with rx.client() as client:
        assert "different record at this place of the box's chain" in client.get("/problems/chain-fork").text


def test_two_records_of_one_batch_at_one_ledger_seq_with_different_sheets_refuse_the_batch(
    receiver: tuple[RunningReceiver, str],
) -> None:
    rx, token = receiver
    problem = assert_problem(rx.post(token, [record("a", seq=1), record("b", seq=1, sheet="other")]), 409)
    assert problem["type"].endswith("/chain-fork")
    assert (problem["seq"], problem["held_hash"], problem["offered_hash"]) == (
        1,
        sheet_hash("a"),
        sheet_hash("other"),
    )
    assert "earlier record of this batch" in problem["detail"]
    assert rx.stored_ids() == []
    assert receiver_rows(rx, "SELECT count(*) FROM chain_places") == [(0,)]
    assert receiver_rows(rx, "SELECT count(*) FROM batches") == [(0,)]


def test_the_same_sheet_again_is_acked_and_stored_once_under_any_record_id(
    receiver: tuple[RunningReceiver, str],
) -> None:
    rx, token = receiver
    assert rx.post(token, [record("a", seq=1)]).json() == {"acked": ["a"], "rejected": []}
    # The same record again (new batch id): acked, as always.
    assert rx.post(token, [record("a", seq=1)]).json() == {"acked": ["a"], "rejected": []}
    # The same ledger row under a new record id (a recovered box re-queued it): acked, not stored.
    again = rx.post(token, [record("a-requeued", seq=1, sheet="a"), record("b", seq=2)])
    assert again.json() == {"acked": ["a-requeued", "b"], "rejected": []}
    # ... and twice in one batch.
    twice = rx.post(token, [record("c", seq=3), record("c-requeued", seq=3, sheet="c")])
    assert twice.json() == {"acked": ["c", "c-requeued"], "rejected": []}
    assert rx.stored_ids() == ["a", "b", "c"]
    assert receiver_rows(rx, "SELECT seq FROM chain_places WHERE chain = 'sheets' ORDER BY seq") == [
        (1,),
        (2,),
        (3,),
    ]
    assert rx.metric("venuebox_receiver_records_stored_total") == 3
    assert rx.metric("venuebox_receiver_records_duplicate_total") == 3


def test_ledger_tells_where_the_receivers_copy_ends_and_pages_its_sheets_in_ledger_order(
    receiver: tuple[RunningReceiver, str],
) -> None:
    rx, token = receiver
    other_token = add_box(rx.data_dir, OTHER_BOX)
    assert rx.ledger(token).json() == {"head": None, "sheets_held": 0, "sheets": [], "last_seq": 0}
    # Out of ledger order across batches, with records of other kinds between.
    rx.post(token, [record("s4", seq=4), record("s1", seq=1), record("audit-1", kind="audit")])
    rx.post(token, [record("s2", seq=2), record("s5", seq=5), record("s3", seq=3)])
    rx.post(other_token, [record("o1", seq=1)], box_id=OTHER_BOX)
    first = rx.ledger(token, after=0, limit=1).raise_for_status().json()
    assert first["head"] == {"seq": 5, "hash": sheet_hash("s5")}
    assert first["sheets_held"] == 5
    seen = first["sheets"]
    after = first["last_seq"]
    while True:
        page = rx.ledger(token, after=after, limit=2).raise_for_status().json()
        if not page["sheets"]:
            assert page["last_seq"] == after
            break
        seen += page["sheets"]
        after = page["last_seq"]
    assert [(s["seq"], s["id"], s["hash"]) for s in seen] == [
        (n, f"s{n}", sheet_hash(f"s{n}")) for n in range(1, 6)
    ]
    assert seen[2]["payload"] == record("s3", seq=3)["payload"]
    assert set(seen[0]) == {"seq", "hash", "id", "created_at", "payload", "received_at"}
    assert [s["seq"] for s in rx.ledger(token, after=3).json()["sheets"]] == [4, 5]
    # The box's own token only, as for the records.
    assert_problem(rx.ledger(other_token), 401)
    assert_problem(rx.ledger(""), 401)
    assert rx.ledger(other_token, box_id=OTHER_BOX).json()["head"] == {"seq": 1, "hash": sheet_hash("o1")}
    assert_problem(rx.ledger(token, limit=0), 422)


def test_upgrade_places_the_sheets_already_stored_and_refuses_forks_of_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "receiver"
    token = add_box(data_dir, BOX)
    # A receiver database as the version before this one left it, forks included.
    old = Database(data_dir / "receiver.sqlite")
    receiver_store.migrations.apply(old, stop_before="m002_sheet_chain")
    old.execute("PRAGMA user_version = 1")
    stored = [
        record("r1", seq=1),
        record("r2", seq=2),
        record("audit-1", kind="audit"),
        record("r2-fork", seq=2, sheet="restored box's sheet"),  # let in by the old version
        record("r2-again", seq=2, sheet="r2"),  # the same ledger row under another record id
        record("no-place", payload={"sheet_id": "no-place"}),  # a sheet without its ledger seq
        record("r3", seq=3),
    ]
    with old.conn:
        old.conn.executemany(
            "INSERT INTO records (box_id, record_id, kind, created_at, payload, received_at, batch_id)"
            " VALUES (?, ?, ?, ?, ?, '2026-03-14T10:42:08Z', 'old-batch')",
            [(BOX, r["id"], r["kind"], r["created_at"], json.dumps(r["payload"])) for r in stored],
        )
    old.close()

    rx = RunningReceiver(data_dir).start()
    try:
        assert receiver_rows(
            rx,
            "SELECT c.seq, c.hash, r.record_id FROM chain_places c JOIN records r ON r.seq = c.record_seq"
            " WHERE c.chain = 'sheets' ORDER BY c.seq",
        ) == [(1, sheet_hash("r1"), "r1"), (2, sheet_hash("r2"), "r2"), (3, sheet_hash("r3"), "r3")]
        assert [row[0] for row in receiver_rows(rx, "SELECT name FROM _sqlite_migrations ORDER BY id")][
            -2:
        ] == [
            "m002_sheet_chain",
            "m003_chain_places",
        ]
        assert rx.ledger(token).json()["head"] == {"seq": 3, "hash": sheet_hash("r3")}
        problem = assert_problem(rx.post(token, [record("new-2", seq=2, sheet="yet another")]), 409)
        assert problem["held_hash"] == sheet_hash("r2")
        # Records stored before stay acked when resent, the fork let in before included.
        resent = [record("r1", seq=1), record("r2-fork", seq=2, sheet="restored box's sheet")]
        assert rx.post(token, resent).json()["acked"] == ["r1", "r2-fork"]
        assert rx.post(token, [record("r4", seq=4)]).status_code == 200
        assert rx.stored_ids() == [r["id"] for r in stored] + ["r4"]
    finally:
        rx.stop()
    assert "1 sheet record(s) stored before this version disagree" in (data_dir / "receiver.log").read_text()


# -- no forks of the audit log either: one audit record per audit-log seq of a box -----------------


def audit_hash(seq: int, action: str = "box.freeze") -> str:
    return audit_record("-", seq, action=action)["payload"]["hash"]


def chain_rows(rx: RunningReceiver, chain: str) -> list[tuple[Any, ...]]:
    return receiver_rows(
        rx,
        "SELECT c.seq, c.hash, r.record_id FROM chain_places c JOIN records r ON r.seq = c.record_seq"
        " WHERE c.box_id = ? AND c.chain = ? ORDER BY c.seq",
        BOX,
        chain,
    )


def test_a_different_audit_record_at_a_held_audit_log_seq_is_a_fork_and_nothing_of_its_batch_is_stored(
    receiver: tuple[RunningReceiver, str],
) -> None:
    rx, token = receiver
    # Audit-log seq 1 and ledger seq 1 are two places: the chains are kept apart.
    first = rx.post(token, [audit_record("a1", 1), audit_record("a2", 2), record("s1", seq=1)])
    assert first.json() == {"acked": ["a1", "a2", "s1"], "rejected": []}
    forking = [record("s2", seq=2), audit_record("a3", 3), audit_record("x", 2, action="box.unfreeze")]
    problem = assert_problem(rx.post(token, forking, key="batch-2"), 409)
    assert problem["type"] == "/problems/chain-fork"
    assert problem["title"] == "The receiver holds a different record at this place of the box's chain"
    assert (
        problem["chain"],
        problem["seq"],
        problem["held_hash"],
        problem["offered_hash"],
        problem["record_id"],
    ) == ("audit", 2, audit_hash(2), audit_hash(2, "box.unfreeze"), "x")
    assert "audit-log seq 2" in problem["detail"] and "different audit record" in problem["detail"]
    assert "sheet" not in problem["detail"]
    # Nothing of the batch: not its good records, not its places, not its answer under the key.
    assert rx.stored_ids() == ["a1", "a2", "s1"]
    assert chain_rows(rx, "audit") == [(1, audit_hash(1), "a1"), (2, audit_hash(2), "a2")]
    assert chain_rows(rx, "sheets") == [(1, sheet_hash("s1"), "s1")]
    assert receiver_rows(rx, "SELECT idempotency_key FROM batches WHERE idempotency_key = 'batch-2'") == []
    # Two records of one batch that disagree at an audit-log seq nobody holds yet: refused too.
    inside = assert_problem(rx.post(token, [audit_record("b", 5), audit_record("c", 5, action="other")]), 409)
    assert (inside["chain"], inside["seq"], inside["record_id"]) == ("audit", 5, "c")
    assert "earlier record of this batch" in inside["detail"]
    # The corrected batch under the same key is a new batch, not an idempotency mismatch.
    corrected = rx.post(token, forking[:2], key="batch-2")
    assert corrected.json() == {"acked": ["s2", "a3"], "rejected": []}
    assert rx.stored_ids() == ["a1", "a2", "s1", "s2", "a3"]
    assert rx.metric("venuebox_receiver_chain_forks_total") == 2


def test_the_same_audit_record_again_is_acked_and_stored_once_under_any_record_id(
    receiver: tuple[RunningReceiver, str],
) -> None:
    rx, token = receiver
    assert rx.post(token, [audit_record("a1", 1)]).json() == {"acked": ["a1"], "rejected": []}
    # The same record again (new batch id): acked, as always.
    assert rx.post(token, [audit_record("a1", 1)]).json() == {"acked": ["a1"], "rejected": []}
    # The same audit-log row under a new record id (a recovered box re-queued it): acked, not stored.
    again = rx.post(token, [audit_record("a1-requeued", 1), audit_record("a2", 2)])
    assert again.json() == {"acked": ["a1-requeued", "a2"], "rejected": []}
    # ... and twice in one batch.
    twice = rx.post(token, [audit_record("a3", 3), audit_record("a3-requeued", 3)])
    assert twice.json() == {"acked": ["a3", "a3-requeued"], "rejected": []}
    assert rx.stored_ids() == ["a1", "a2", "a3"]
    assert chain_rows(rx, "audit") == [(n, audit_hash(n), f"a{n}") for n in (1, 2, 3)]
    assert rx.metric("venuebox_receiver_records_stored_total") == 3
    assert rx.metric("venuebox_receiver_records_duplicate_total") == 3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            {"action": "box.freeze"},
            "payload.seq: an audit record carries its audit-log seq, an integer from 1",
        ),
        ({"seq": 0}, "payload.seq: an audit record carries its audit-log seq"),
        ({"seq": "3"}, "payload.seq:"),
        ({"seq": True}, "payload.seq:"),
        ({"hash": None}, "payload.hash: an audit record carries its audit-log hash, 64 lowercase hex digits"),
        ({"hash": "AB" * 32}, "payload.hash:"),
    ],
)
def test_an_audit_record_without_its_audit_log_place_is_rejected_alone(
    receiver: tuple[RunningReceiver, str], payload: dict[str, Any], reason: str
) -> None:
    rx, token = receiver
    bad = audit_record("bad", 4)
    bad["payload"] = ({} if "action" in payload else bad["payload"]) | payload
    answer = rx.post(token, [audit_record("a1", 1), bad, record("s1", seq=1)])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["acked"] == ["a1", "s1"]
    assert [(r["id"], r["status"]) for r in body["rejected"]] == [("bad", 422)]
    assert body["rejected"][0]["reason"].startswith(reason)
    assert rx.stored_ids() == ["a1", "s1"]
    assert receiver_rows(rx, "SELECT chain, seq FROM chain_places ORDER BY chain, seq") == [
        ("audit", 1),
        ("sheets", 1),
    ]


def page_through(rx: RunningReceiver, token: str, chain: str, limit: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        page = rx.chain(token, chain, after=after, limit=limit).raise_for_status().json()
        assert page["chain"] == chain
        if not page["entries"]:
            assert page["last_seq"] == after
            return seen
        assert page["last_seq"] == page["entries"][-1]["seq"]
        seen += page["entries"]
        after = page["last_seq"]


def test_chains_page_the_audit_log_and_the_ledger_in_chain_order(
    receiver: tuple[RunningReceiver, str],
) -> None:
    rx, token = receiver
    other_token = add_box(rx.data_dir, OTHER_BOX)
    for chain in ("audit", "sheets"):
        assert rx.chain(token, chain).json() == {
            "chain": chain,
            "head": None,
            "held": 0,
            "entries": [],
            "last_seq": 0,
        }
    # Out of chain order across batches, the two chains and other kinds mixed, a gap at audit seq 4.
    rx.post(token, [audit_record("a5", 5), record("s2", seq=2), audit_record("a1", 1)])
    rx.post(token, [record("hb", kind="heartbeat", payload={}), audit_record("a3", 3), record("s1", seq=1)])
    rx.post(token, [audit_record("a2", 2), record("s3", seq=3)])
    rx.post(other_token, [audit_record("o1", 1, action="other box")], box_id=OTHER_BOX)

    audit = rx.chain(token, "audit", limit=1).raise_for_status().json()
    assert audit["head"] == {"seq": 5, "hash": audit_hash(5)}
    assert audit["held"] == 4  # below head.seq: the receiver's copy has a gap (seq 4)
    entries = page_through(rx, token, "audit", limit=2)
    assert [(e["seq"], e["id"], e["hash"]) for e in entries] == [
        (n, f"a{n}", audit_hash(n)) for n in (1, 2, 3, 5)
    ]
    assert entries[2]["payload"] == audit_record("a3", 3)["payload"]
    assert set(entries[0]) == {"seq", "hash", "id", "created_at", "payload", "received_at"}
    assert [e["seq"] for e in rx.chain(token, "audit", after=2).json()["entries"]] == [3, 5]
    assert rx.chain(token, "audit", after=5).json()["last_seq"] == 5

    sheets = rx.chain(token, "sheets").raise_for_status().json()
    assert sheets["head"] == {"seq": 3, "hash": sheet_hash("s3")} and sheets["held"] == 3
    assert [(e["seq"], e["id"]) for e in page_through(rx, token, "sheets", limit=2)] == [
        (1, "s1"),
        (2, "s2"),
        (3, "s3"),
    ]
    # /ledger is the sheets chain in the shape it always had.
    ledger = rx.ledger(token).json()
    assert ledger == {
        "head": sheets["head"],
        "sheets_held": sheets["held"],
        "sheets": sheets["entries"],
        "last_seq": sheets["last_seq"],
    }
    # The box's own token only; bad paging and unknown chains are problems.
    assert rx.chain(other_token, "audit", box_id=OTHER_BOX).json()["head"] == {
        "seq": 1,
        "hash": audit_hash(1, "other box"),
    }
    assert_problem(rx.chain(other_token, "audit"), 401)
    assert_problem(rx.chain("", "audit"), 401)
    assert_problem(rx.chain("", "nope"), 401)  # the token first, as everywhere
    assert_problem(rx.chain(token, "audit", limit=0), 422)
    assert_problem(rx.chain(token, "sheets", after=-1), 422)
    for bad in ("nope", "ledger", "Audit", "audit_log"):
        problem = assert_problem(rx.chain(token, bad), 404)
        assert problem["type"] == "/problems/not-found"
        assert repr(bad) in problem["detail"] and "sheets and audit" in problem["detail"]


def test_upgrade_places_the_audit_records_already_stored_and_refuses_forks_of_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "receiver"
    token = add_box(data_dir, BOX)
    # A receiver database made by the first version, upgraded by the second (m002 places the
    # sheets), which then stored audit records unchecked, forks included.
    old = Database(data_dir / "receiver.sqlite")

    def store(records: list[dict[str, Any]], batch: str) -> None:
        with old.conn:
            old.conn.executemany(
                "INSERT INTO records (box_id, record_id, kind, created_at, payload, received_at, batch_id)"
                " VALUES (?, ?, ?, ?, ?, '2026-03-14T10:42:08Z', ?)",
                [
                    (BOX, r["id"], r["kind"], r["created_at"], json.dumps(r["payload"]), batch)
                    for r in records
                ],
            )

    receiver_store.migrations.apply(old, stop_before="m002_sheet_chain")
    old.execute("PRAGMA user_version = 1")
    no_place = audit_record("no-place", 9)
    del no_place["payload"]["seq"]
    bad_hash = audit_record("bad-hash", 8)
    bad_hash["payload"]["hash"] = "not-a-hash"
    first_version = [
        record("s1", seq=1),
        audit_record("a1", 1),
        record("s2", seq=2),
        record("s2-fork", seq=2, sheet="another"),
        audit_record("a2", 2),
        no_place,
        bad_hash,
    ]
    store(first_version, "v1")
    receiver_store.migrations.apply(old, stop_before="m003_chain_places")
    old.execute("PRAGMA user_version = 2")
    second_version = [
        audit_record("a2-fork", 2, action="restored box's entry"),  # let in: no audit chain then
        audit_record("a2-again", 2),  # the same audit-log row under another record id
        audit_record("a3", 3),
        audit_record("a3-fork", 3, action="twin's entry"),
    ]
    store(second_version, "v2")
    old.close()

    rx = RunningReceiver(data_dir).start()
    try:
        names = [row[0] for row in receiver_rows(rx, "SELECT name FROM _sqlite_migrations ORDER BY id")]
        assert names == ["m001_records", "m002_sheet_chain", "m003_chain_places"]
        assert receiver_rows(rx, "SELECT name FROM sqlite_master WHERE name = 'sheet_chain'") == []
        # The sheets keep the places m002 gave them; the audit records are placed first stored first.
        assert chain_rows(rx, "sheets") == [(1, sheet_hash("s1"), "s1"), (2, sheet_hash("s2"), "s2")]
        assert chain_rows(rx, "audit") == [
            (1, audit_hash(1), "a1"),
            (2, audit_hash(2), "a2"),
            (3, audit_hash(3), "a3"),
        ]
        assert rx.chain(token, "audit").json()["head"] == {"seq": 3, "hash": audit_hash(3)}
        assert rx.ledger(token).json()["head"] == {"seq": 2, "hash": sheet_hash("s2")}
        problem = assert_problem(rx.post(token, [audit_record("new-2", 2, action="yet another")]), 409)
        assert (problem["chain"], problem["seq"], problem["held_hash"]) == ("audit", 2, audit_hash(2))
        # Records stored before stay acked when resent, the forks let in before included.
        resent = [audit_record("a1", 1), audit_record("a2-fork", 2, action="restored box's entry")]
        assert rx.post(token, resent).json()["acked"] == ["a1", "a2-fork"]
        assert rx.post(token, [audit_record("a4", 4), record("s3", seq=3)]).status_code == 200
        expected = [r["id"] for r in first_version + second_version] + ["a4", "s3"]
        assert rx.stored_ids() == expected
    finally:
        rx.stop()
    log = (data_dir / "receiver.log").read_text()
    assert "2 audit record(s) stored before this version disagree" in log
    assert "sheet record(s) stored before" not in log  # m002 ran before (in this test), not again
