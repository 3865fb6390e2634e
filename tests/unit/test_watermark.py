"""appliance/core/watermark.py on a real box database: what makes a sheet safe, and the epoch."""

from __future__ import annotations

import uuid

from appliance.core import watermark
from appliance.core.ledger import SheetSubmission, submit_sheets
from appliance.core.storage import Store
from tests.conftest import paired_device


def _store_sheets(store: Store, count: int) -> None:
    device = paired_device(store, "J1")
    entries = store.query(
        lambda c: [
            r[0]
            for r in c.execute(
                "SELECT e.entry_id FROM entries e JOIN panels p ON p.session_id = e.session_id"
                " WHERE p.judge_id = 'J1' ORDER BY e.entry_id LIMIT ?",
                (count,),
            )
        ]
    )
    sheets = [
        SheetSubmission(
            sheet_id=str(uuid.uuid4()),
            entry_id=entry,
            values={"technique": 9.4, "performance": 9.1, "choreography": 8.5},
            submitted_at="2026-03-14T10:42:07-05:00",
        )
        for entry in entries
    ]
    store.write_sync(lambda c: submit_sheets(c, [(device, s) for s in sheets]))


def _snapshot_row(store: Store, name: str, rows: int, ok: int | None) -> None:
    store.write_sync(
        lambda c: c.execute(
            "INSERT INTO snapshots (name, path, created_at, bytes, sha256, ledger_rows, ledger_head,"
            " audit_rows, audit_head, row_counts, recipients, verify_ok) VALUES"
            " (?, ?, '2026-03-14T10:00:00Z', 1, 'x', ?, 'h', 0, 'h', '{}', 1, ?)",
            (name, name, rows, ok),
        )
    )


def _mark(store: Store) -> dict[str, object]:
    return store.query(watermark.ledger_mark)


def test_only_a_verified_snapshot_makes_sheets_safe(sample_store: Store) -> None:
    _store_sheets(sample_store, 5)
    assert _mark(sample_store)["safe_seq"] == 0  # nothing in a snapshot, nothing at the cloud
    _snapshot_row(sample_store, "not-checked-yet", 4, None)
    _snapshot_row(sample_store, "failed", 5, 0)
    assert _mark(sample_store)["safe_seq"] == 0
    _snapshot_row(sample_store, "good", 3, 1)
    assert _mark(sample_store)["safe_seq"] == 3


def test_the_cloud_makes_safe_up_to_the_first_sheet_it_has_not_acknowledged(sample_store: Store) -> None:
    _store_sheets(sample_store, 5)

    def ack_up_to(seq: int) -> None:
        sample_store.write_sync(
            lambda c: c.execute(
                "UPDATE outbox SET acked_at = '2026-03-14T10:00:00Z'"
                " WHERE sheet_seq <= ? OR sheet_seq IS NULL",
                (seq,),
            )
        )

    ack_up_to(2)
    assert _mark(sample_store)["safe_seq"] == 2
    # A record the receiver refused is not safe, however far the acks went past it.
    sample_store.write_sync(
        lambda c: c.execute("UPDATE outbox SET quarantined_at = '2026-03-14T10:00:00Z' WHERE sheet_seq = 4")
    )
    ack_up_to(3)
    sample_store.write_sync(
        lambda c: c.execute("UPDATE outbox SET acked_at = '2026-03-14T10:00:00Z' WHERE sheet_seq = 5")
    )
    assert _mark(sample_store)["safe_seq"] == 3
    sample_store.write_sync(
        lambda c: c.execute(
            "UPDATE outbox SET quarantined_at = NULL, acked_at = '2026-03-14T10:00:00Z' WHERE sheet_seq = 4"
        )
    )
    assert _mark(sample_store)["safe_seq"] == 5  # everything acknowledged: the ledger's head


def test_a_box_has_an_epoch_from_its_first_boot_and_a_new_one_when_rebuilt(sample_store: Store) -> None:
    first = _mark(sample_store)["epoch"]
    assert isinstance(first, str) and len(first) == 16
    assert sample_store.write_sync(watermark.new_epoch) != first
    assert _mark(sample_store)["epoch"] != first
