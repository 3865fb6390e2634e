"""The ledger's rules on a real SQLite file, called as the writer calls them."""

from __future__ import annotations

import json
import uuid

import pytest

from appliance.core import chain
from appliance.core.devices import revoke
from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_sheets
from appliance.core.storage import Store
from appliance.shared.errors import EntryNotOnPanel, InvalidInput, NotAuthenticated, SheetConflict
from tests.conftest import paired_device


@pytest.fixture
def store(sample_store: Store) -> Store:
    return sample_store


pair = paired_device


def sheet(entry_id: str, supersedes: str | None = None, **values: float) -> SheetSubmission:
    scores = {"technique": 9.4, "performance": 9.1, "choreography": 8.5} | values
    return SheetSubmission(str(uuid.uuid4()), entry_id, scores, "2026-03-14T10:42:07-04:00", None, supersedes)


def entries_of(store: Store, judge_id: str) -> list[str]:
    sql = (
        "SELECT entry_id FROM entries WHERE session_id IN (SELECT session_id FROM panels WHERE judge_id = ?)"
        " ORDER BY session_id, running_order"
    )
    return store.query(lambda c: [row[0] for row in c.execute(sql, (judge_id,))])


def test_one_call_answers_each_sheet_of_many_devices_on_its_own(store: Store) -> None:
    j1, j3, gone = pair(store, "J1"), pair(store, "J3"), pair(store, "J3")
    store.write_sync(lambda c: revoke(c, gone.device_id, "test"))
    entry = entries_of(store, "J1")[0]
    first = sheet(entry)
    other_judge = sheet(entry)  # J3 scores the same entry: a different (entry, judge) chain
    items = [
        (j1, first),
        (gone, sheet(entry)),
        (j1, sheet(entry, technique=11)),
        (j3, other_judge),
        (j1, sheet(entry, supersedes=first.sheet_id)),
        (j1, sheet(entry)),
        (j1, first),
    ]
    outcomes = store.write_sync(lambda c: submit_sheets(c, items))
    kinds = [o.status if isinstance(o, SheetReceipt) else type(o) for o in outcomes]
    assert kinds == [201, NotAuthenticated, InvalidInput, 201, 201, SheetConflict, 200]
    replayed, stored_first = outcomes[6], outcomes[0]
    assert isinstance(replayed, SheetReceipt) and isinstance(stored_first, SheetReceipt)
    assert replayed.sheet == stored_first.sheet
    stored = store.query(lambda c: [r[0] for r in c.execute("SELECT sheet_id FROM sheets ORDER BY seq")])
    assert stored == [first.sheet_id, other_judge.sheet_id, items[4][1].sheet_id]
    assert (
        store.query(lambda c: c.execute("SELECT count(*) FROM outbox WHERE kind = 'sheet'").fetchone()[0])
        == 3
    )
    assert store.query(lambda c: chain.verify_chain(c, "sheets")).ok


def test_an_entry_off_the_judges_panel_is_refused(store: Store) -> None:
    j5 = pair(store, "J5")
    off_panel = next(e for e in entries_of(store, "J1") if e not in entries_of(store, "J5"))
    [outcome] = store.write_sync(lambda c: submit_sheets(c, [(j5, sheet(off_panel))]))
    assert isinstance(outcome, EntryNotOnPanel)


def test_outbox_records_point_at_their_sheets_and_travel_whole(store: Store) -> None:
    from appliance.core import outbox

    j1 = pair(store, "J1")
    first = sheet(entries_of(store, "J1")[0])
    store.write_sync(lambda c: submit_sheets(c, [(j1, first)]))
    # The box's own set-up is queued too, as audit records; the one sheet record follows them.
    batch = store.query(lambda c: outbox.prepare_batch(c, 10_000, 1 << 40))
    assert batch is not None
    records = json.loads(batch.body)["records"]
    assert {r["kind"] for r in records[:-1]} == {"audit"}
    record = records[-1]
    assert record["kind"] == "sheet" and record["id"]
    assert record["payload"]["sheet_id"] == first.sheet_id
    assert record["payload"]["values"] == {"technique": 9.4, "performance": 9.1, "choreography": 8.5}
    assert record["payload"]["judge_id"] == "J1" and record["payload"]["hash"]
