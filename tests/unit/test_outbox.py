"""Outbox delivery on a real SQLite file: batches keep their id and body, acks remove records from the
send queue, rejected records go to quarantine alone, acked records are kept for retention only."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from appliance.core import outbox
from appliance.core.storage import Store
from appliance.shared.times import utcnow


@pytest.fixture
def store(sample_store: Store) -> Store:
    # The box's own set-up records (audit) first, then 20 of ours: 'audit' records with a payload.
    for i in range(20):
        sample_store.write_sync(partial(outbox.enqueue, kind="audit", payload={"n": i, "pad": "x" * 100}))
    return sample_store


def pending_ids(store: Store) -> list[str]:
    batch = store.query(lambda c: outbox.prepare_batch(c, 10_000, 1 << 40))
    return batch.record_ids if batch is not None else []


def open_batch(conn: sqlite3.Connection, max_records: int, max_bytes: int) -> outbox.Batch | None:
    """The batch the uplink worker sends next (``UplinkWorker._batch_to_send``, in one transaction):
    the open one again, else a new one of the oldest pending records, made the open one."""
    batch = outbox.resume_batch(conn)
    if batch is None:
        batch = outbox.prepare_batch(conn, max_records, max_bytes)
        if batch is not None:
            assert outbox.assign_batch(conn, batch)
    return batch


def travelling(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The pending records as docs/protocol.md says they travel, read straight from the tables: a
    sheet's payload is its ledger row (values as JSON, without the chain's own hash of it)."""
    rows = conn.execute(
        "SELECT o.record_id, o.kind, o.created_at, o.payload, s.* FROM outbox o"
        " LEFT JOIN sheets s ON s.seq = o.sheet_seq"
        " WHERE o.acked_at IS NULL AND o.quarantined_at IS NULL ORDER BY o.seq"
    ).fetchall()
    sheet_fields: tuple[str, ...] = (
        "sheet_id",
        "entry_id",
        "judge_id",
        "supersedes",
        "seq",
        "received_at",
        "hash",
    )
    sheet_fields += ("event_id", "device_id", "values", "comment", "submitted_at")
    sheet_fields += ("content_hash", "prev_hash")
    return [
        {
            "id": r["record_id"],
            "kind": r["kind"],
            "created_at": r["created_at"],
            "payload": (
                {f: json.loads(r["score_values"]) if f == "values" else r[f] for f in sheet_fields}
                if r["kind"] == "sheet"
                else json.loads(r["payload"])
            ),
        }
        for r in rows
    ]


def test_a_batch_takes_the_oldest_pending_records_up_to_the_count(store: Store) -> None:
    everything = pending_ids(store)
    batch = store.write_sync(lambda c: open_batch(c, 5, 1_000_000))
    assert batch is not None
    assert batch.record_ids == everything[:5]
    body = json.loads(batch.body)
    assert [r["id"] for r in body["records"]] == everything[:5]
    assert set(body["records"][0]) == {"id", "kind", "created_at", "payload"}


def test_a_batch_stays_under_the_byte_limit_but_always_holds_one_record(store: Store) -> None:
    batch = store.write_sync(lambda c: open_batch(c, 1000, 700))
    assert batch is not None and 1 <= len(batch) < 10
    assert len(batch.body) <= 700
    store.write_sync(outbox.release_batch)
    tiny = store.write_sync(lambda c: open_batch(c, 1000, 10))
    assert tiny is not None and len(tiny) == 1  # larger than the limit alone: sent alone


def test_the_open_batch_is_the_same_batch_until_it_is_closed(store: Store) -> None:
    first = store.write_sync(lambda c: open_batch(c, 5, 1_000_000))
    store.write_sync(lambda c: outbox.enqueue(c, "audit", {"late": True}))
    again = store.write_sync(lambda c: open_batch(c, 50, 1_000_000))
    assert again == first  # same id, same records, byte-identical body: a retry is a replay


def test_closing_a_batch_acks_quarantines_and_leaves_the_unanswered_pending(store: Store) -> None:
    batch = store.write_sync(lambda c: open_batch(c, 6, 1_000_000))
    assert batch is not None
    a, b, c_, *rest = batch.record_ids
    result = store.write_sync(
        lambda c: outbox.close_batch(
            c, batch, [a, b, "not-in-this-batch"], [(c_, "422: kind: bad")], utcnow()
        )
    )
    assert (result.acked, result.quarantined, result.unanswered) == (2, 1, 3)
    still = pending_ids(store)
    assert a not in still and b not in still and c_ not in still
    assert still[:3] == rest
    [held] = store.query(outbox.quarantined)
    assert held.record_id == c_ and held.quarantine_reason == "422: kind: bad"
    view = store.query(lambda c: outbox.backlog(c, utcnow()))
    assert view.quarantined == 1 and view.acked_retained == 2
    assert view.records == len(still)
    # The next batch is new and starts where the queue now starts.
    nxt = store.write_sync(lambda c: open_batch(c, 3, 1_000_000))
    assert nxt is not None and nxt.batch_id != batch.batch_id and nxt.record_ids == rest


def test_quarantined_records_go_back_in_line_when_retried(store: Store) -> None:
    batch = store.write_sync(lambda c: open_batch(c, 3, 1_000_000))
    assert batch is not None
    store.write_sync(
        lambda c: outbox.close_batch(c, batch, [], [(i, "bad") for i in batch.record_ids], utcnow())
    )
    assert store.query(lambda c: outbox.backlog(c)).quarantined == 3
    assert store.write_sync(lambda c: outbox.retry_quarantined(c, [batch.record_ids[0]])) == 1
    assert pending_ids(store)[0] == batch.record_ids[0]
    assert store.write_sync(lambda c: outbox.retry_quarantined(c)) == 2
    assert pending_ids(store)[:3] == batch.record_ids


def test_acked_records_are_pruned_only_after_the_retention(store: Store) -> None:
    batch = store.write_sync(lambda c: open_batch(c, 4, 1_000_000))
    assert batch is not None
    acked_at = utcnow()
    store.write_sync(lambda c: outbox.close_batch(c, batch, batch.record_ids, [], acked_at))
    before = store.query(lambda c: c.execute("SELECT count(*) FROM outbox").fetchone()[0])
    assert store.write_sync(lambda c: outbox.prune_acked(c, acked_at - timedelta(seconds=1))) == 0
    assert store.write_sync(lambda c: outbox.prune_acked(c, acked_at + timedelta(seconds=1))) == 4
    after = store.query(lambda c: c.execute("SELECT count(*) FROM outbox").fetchone()[0])
    assert after == before - 4
    assert store.query(lambda c: outbox.backlog(c)).acked_retained == 0


def test_nothing_pending_means_no_batch(sample_store: Store) -> None:
    while (batch := sample_store.write_sync(lambda c: open_batch(c, 100, 1_000_000))) is not None:
        sample_store.write_sync(
            partial(outbox.close_batch, batch=batch, acked=batch.record_ids, rejected=[], now=utcnow())
        )
    assert sample_store.query(outbox.has_pending) is False
    view = sample_store.query(lambda c: outbox.backlog(c, utcnow()))
    assert view.records == 0 and view.oldest_created_at is None and view.oldest_age_s is None


def test_a_prune_is_bounded_so_it_never_holds_the_writer_for_long(store: Store) -> None:
    batch = store.write_sync(lambda c: open_batch(c, 10, 1_000_000))
    assert batch is not None
    store.write_sync(lambda c: outbox.close_batch(c, batch, batch.record_ids, [], utcnow()))
    later = utcnow() + timedelta(seconds=1)
    assert store.write_sync(lambda c: outbox.prune_acked(c, later, limit=4)) == 4
    assert store.write_sync(lambda c: outbox.prune_acked(c, later, limit=4)) == 4
    assert store.write_sync(lambda c: outbox.prune_acked(c, later, limit=4)) == 2


def test_a_batch_carries_exactly_the_records_as_they_travel(sample_store: Store) -> None:
    from appliance.core.ledger import SheetSubmission, submit_sheets
    from tests.conftest import paired_device

    device = paired_device(sample_store, "J1")
    entry = sample_store.query(
        lambda c: c.execute(
            "SELECT e.entry_id FROM entries e JOIN panels p ON p.session_id = e.session_id"
            " WHERE p.judge_id = 'J1' LIMIT 1"
        ).fetchone()[0]
    )
    sheet = SheetSubmission(
        sheet_id="6f1c2f9e-5b7a-4c39-9a55-0b9d2a2c0001",
        entry_id=entry,
        values={"technique": 9.4, "performance": 9.1, "choreography": 8.5},
        comment="tidy lines",
        submitted_at="2026-03-14T10:42:07-05:00",
    )
    sample_store.write_sync(lambda c: submit_sheets(c, [(device, sheet)]))
    expected = sample_store.query(travelling)
    batch = sample_store.write_sync(lambda c: open_batch(c, 10_000, 10_000_000))
    assert batch is not None
    assert json.loads(batch.body)["records"] == expected
    assert expected[-1]["payload"]["values"] == {"technique": 9.4, "performance": 9.1, "choreography": 8.5}


def test_record_ids_are_uuid7_in_time_order() -> None:
    import uuid

    ids = []
    for _ in range(5):
        ids.append(outbox.new_record_id())
        time.sleep(0.002)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert abs((parsed[0].int >> 80) - time.time() * 1000) < 5000  # the first 48 bits are the time in ms
