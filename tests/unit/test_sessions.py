"""Sign-offs and session locks on a real SQLite file, called as the writer calls them: the ledger
refuses sheets of a locked session and a judge's sheets after their sign-off until the tech reopens
it, every change is an audit record in the outbox for the cloud, and a session is final only when
it is locked and its whole panel signed off."""

from __future__ import annotations

import json
import uuid
from functools import partial
from pathlib import Path

import msgspec
import pytest

from appliance.core import chain, outbox, sessions
from appliance.core.box import freeze
from appliance.core.devices import Device, revoke
from appliance.core.event import judge_event
from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_batch, submit_sheet, submit_sheets
from appliance.core.storage import Store
from appliance.shared.errors import (
    Frozen,
    InvalidInput,
    NoEvent,
    NotAuthenticated,
    NotFound,
    SessionLocked,
    SessionNotOnPanel,
    SignedOff,
)
from appliance.shared.results_wire import SessionState
from tests.conftest import make_box, paired_device

# The sample event: SAT-AM's panel is J1, J2, J3; J4 sits on SAT-PM and SUN-AM only.
AM, PM = "SAT-AM", "SAT-PM"


@pytest.fixture
def store(sample_store: Store) -> Store:
    return sample_store


def sheet(entry_id: str, supersedes: str | None = None) -> SheetSubmission:
    scores = {"technique": 9.4, "performance": 9.1, "choreography": 8.5}
    return SheetSubmission(str(uuid.uuid4()), entry_id, scores, "2026-03-14T10:42:07-04:00", None, supersedes)


def entry_in(store: Store, session_id: str, index: int = 0) -> str:
    sql = "SELECT entry_id FROM entries WHERE session_id = ? ORDER BY running_order"
    return store.query(lambda c: [row[0] for row in c.execute(sql, (session_id,))])[index]


def submit(store: Store, device: Device, *sheets: SheetSubmission) -> list[object]:
    outcomes = store.write_sync(lambda c: submit_sheets(c, [(device, s) for s in sheets]))
    return [o.status if isinstance(o, SheetReceipt) else type(o) for o in outcomes]


def audit_actions(store: Store, prefix: str = "session.") -> list[tuple[str, dict[str, object]]]:
    rows = store.query(
        lambda c: c.execute(
            "SELECT action, detail FROM audit_log WHERE action LIKE ? ORDER BY seq", (prefix + "%",)
        ).fetchall()
    )
    return [(row[0], json.loads(row[1])) for row in rows]


def count(store: Store, table: str) -> int:
    return int(store.query(lambda c: c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]))


def test_a_sign_off_is_idempotent_and_recorded_once(store: Store) -> None:
    j1 = paired_device(store, "J1")
    first = store.write_sync(lambda c: sessions.sign_off(c, j1, AM))
    again = store.write_sync(lambda c: sessions.sign_off(c, j1, AM))
    assert again == first
    assert first["session_id"] == AM and first["judge_id"] == "J1" and first["signed_off_at"]
    # Another tablet of the same judge: the same sign-off, still nothing new.
    other_tablet = paired_device(store, "J1")
    assert store.write_sync(lambda c: sessions.sign_off(c, other_tablet, AM)) == first
    assert count(store, "sign_offs") == 1
    [(action, detail)] = audit_actions(store)
    assert action == "session.sign_off"
    assert detail == {
        "event_id": j1.event_id,
        "session_id": AM,
        "judge_id": "J1",
        "device_id": j1.device_id,
        "signed_off_at": first["signed_off_at"],
    }


def test_a_sign_off_off_the_panel_unknown_frozen_or_revoked_is_refused_and_stores_nothing(
    store: Store,
) -> None:
    j4 = paired_device(store, "J4")
    with pytest.raises(SessionNotOnPanel, match="not on judge 'J4'"):
        store.write_sync(lambda c: sessions.sign_off(c, j4, AM))
    with pytest.raises(NotFound, match="no session 'NOPE'"):
        store.write_sync(lambda c: sessions.sign_off(c, j4, "NOPE"))
    gone = paired_device(store, "J4")
    store.write_sync(lambda c: revoke(c, gone.device_id, "test"))
    with pytest.raises(NotAuthenticated):
        store.write_sync(lambda c: sessions.sign_off(c, gone, PM))
    store.write_sync(lambda c: freeze(c, "judges' meeting", "test"))
    with pytest.raises(Frozen, match="judges' meeting"):
        store.write_sync(lambda c: sessions.sign_off(c, j4, PM))
    assert count(store, "sign_offs") == 0
    assert audit_actions(store) == []


def test_after_a_sign_off_the_judges_sheets_for_that_session_are_read_only_until_reopened(
    store: Store,
) -> None:
    j1, j2 = paired_device(store, "J1"), paired_device(store, "J2")
    entry, unscored = entry_in(store, AM, 0), entry_in(store, AM, 1)
    original = sheet(entry)
    assert submit(store, j1, original) == [201]
    store.write_sync(lambda c: sessions.sign_off(c, j1, AM))

    correction = sheet(entry, supersedes=original.sheet_id)
    # A correction, a new sheet, both refused; a replay of the stored sheet still gets its receipt.
    assert submit(store, j1, correction, sheet(unscored), original) == [SignedOff, SignedOff, 200]
    # Another judge of the panel, and the same judge in another session, score on.
    assert submit(store, j2, sheet(entry)) == [201]
    assert submit(store, j1, sheet(entry_in(store, PM))) == [201]
    with pytest.raises(SignedOff, match="read-only until the venue tech reopens the sign-off"):
        store.write_sync(lambda c: submit_sheet(c, j1, correction))

    state = store.write_sync(lambda c: sessions.reopen(c, AM, "J1", "J1 mis-scored entry 101"))
    assert state.signed_off == []
    assert submit(store, j1, correction) == [201]
    assert [action for action, _ in audit_actions(store)] == ["session.sign_off", "session.reopen"]
    _, reopened = audit_actions(store)[1]
    assert reopened["judge_id"] == "J1" and reopened["reason"] == "J1 mis-scored entry 101"


def test_reopen_needs_a_reason_and_a_sign_off_to_take_back(store: Store) -> None:
    j1 = paired_device(store, "J1")
    with pytest.raises(NotFound, match="has not signed off"):
        store.write_sync(lambda c: sessions.reopen(c, AM, "J1", "a reason"))
    store.write_sync(lambda c: sessions.sign_off(c, j1, AM))
    with pytest.raises(InvalidInput, match="needs a reason"):
        store.write_sync(lambda c: sessions.reopen(c, AM, "J1", "   "))
    with pytest.raises(NotFound, match="no session 'NOPE'"):
        store.write_sync(lambda c: sessions.reopen(c, "NOPE", "J1", "a reason"))
    assert count(store, "sign_offs") == 1
    assert [action for action, _ in audit_actions(store)] == ["session.sign_off"]


def test_a_locked_session_refuses_every_sheet_and_wins_over_a_sign_off(store: Store) -> None:
    j1, j2 = paired_device(store, "J1"), paired_device(store, "J2")
    entry = entry_in(store, AM)
    original = sheet(entry)
    assert submit(store, j1, original) == [201]
    store.write_sync(lambda c: sessions.sign_off(c, j1, AM))
    state = store.write_sync(lambda c: sessions.lock(c, AM, "awards at 12:30"))
    assert state.locked and state.locked_reason == "awards at 12:30" and state.locked_at

    # J1 signed off too, but the lock is what they are told; J2 never signed off: locked as well.
    assert submit(store, j1, sheet(entry, supersedes=original.sheet_id)) == [SessionLocked]
    assert submit(store, j2, sheet(entry)) == [SessionLocked]
    assert submit(store, j1, original) == [200]  # stored before the lock: its receipt again
    assert submit(store, j1, sheet(entry_in(store, PM))) == [201]  # the lock is per session
    # In a batch each item gets its own answer (a lock is not the whole call's refusal).
    outcomes = store.write_sync(
        lambda c: submit_batch(c, j2, [sheet(entry), sheet(entry_in(store, "SUN-AM"))])
    )
    assert [o.status if isinstance(o, SheetReceipt) else type(o) for o in outcomes] == [SessionLocked, 201]

    store.write_sync(lambda c: sessions.unlock(c, AM, "a protest upheld: J2 rescores 101"))
    assert submit(store, j2, sheet(entry)) == [201]
    # Unlocked, J1's sign-off holds again.
    assert submit(store, j1, sheet(entry, supersedes=original.sheet_id)) == [SignedOff]


def test_lock_and_unlock_need_a_reason_a_known_session_and_record_only_changes(store: Store) -> None:
    for bad in ("", "  \t"):
        with pytest.raises(InvalidInput, match="needs a reason"):
            store.write_sync(partial(sessions.lock, session_id=AM, reason=bad))
        with pytest.raises(InvalidInput, match="needs a reason"):
            store.write_sync(partial(sessions.unlock, session_id=AM, reason=bad))
    with pytest.raises(NotFound, match="no session 'SAT-EVE'"):
        store.write_sync(lambda c: sessions.lock(c, "SAT-EVE", "a reason"))
    assert count(store, "session_locks") == 0 and audit_actions(store) == []

    first = store.write_sync(lambda c: sessions.lock(c, AM, "first"))
    second = store.write_sync(lambda c: sessions.lock(c, AM, "second"))
    assert second == first and second.locked_reason == "first"
    store.write_sync(lambda c: sessions.unlock(c, AM, "reopened for a protest"))
    store.write_sync(lambda c: sessions.unlock(c, AM, "again"))  # not locked: nothing to do
    assert [action for action, _ in audit_actions(store)] == ["session.lock", "session.unlock"]
    _, unlocked = audit_actions(store)[1]
    assert unlocked == {
        "event_id": "glow-2026-toronto",
        "session_id": AM,
        "reason": "reopened for a protest",
        "was": "first",
    }


def test_lock_without_an_event_is_refused(tmp_path: Path) -> None:
    config = make_box(tmp_path / "empty", package=None)
    with Store(config.db_path) as empty:
        with pytest.raises(NoEvent):
            empty.write_sync(lambda c: sessions.lock(c, AM, "a reason"))
        assert empty.query(sessions.session_states) == {}


def test_session_states_and_finality(store: Store) -> None:
    judges = {judge: paired_device(store, judge) for judge in ("J1", "J2", "J3")}
    states = store.query(sessions.session_states)
    assert list(states) == ["SAT-AM", "SAT-PM", "SUN-AM"]
    assert states[AM] == SessionState(
        session_id=AM,
        locked=False,
        locked_reason=None,
        locked_at=None,
        signed_off=[],
        panel=["J1", "J2", "J3"],
    )
    for judge in ("J3", "J1"):
        store.write_sync(partial(sessions.sign_off, device=judges[judge], session_id=AM))
    store.write_sync(lambda c: sessions.lock(c, AM, "awards"))
    state = store.query(sessions.session_states)[AM]
    assert state.signed_off == ["J1", "J3"] and state.locked
    assert not sessions.is_final(state)  # J2 has not signed off
    store.write_sync(lambda c: sessions.sign_off(c, judges["J2"], AM))  # a locked session can be signed off
    final = store.query(sessions.session_states)[AM]
    assert sessions.is_final(final)
    store.write_sync(lambda c: sessions.reopen(c, AM, "J2", "J2 asked to check 103"))
    assert not sessions.is_final(store.query(sessions.session_states)[AM])
    # Every judge signed off but not locked: provisional still; and no panel is never final.
    assert not sessions.is_final(msgspec.structs.replace(final, locked=False))
    assert not sessions.is_final(msgspec.structs.replace(final, panel=[], signed_off=[]))


def test_sign_offs_and_locks_travel_to_the_cloud_with_the_rule_set(store: Store) -> None:
    j1 = paired_device(store, "J1")
    store.write_sync(lambda c: sessions.sign_off(c, j1, AM))
    store.write_sync(lambda c: sessions.lock(c, AM, "awards at 12:30"))
    store.write_sync(lambda c: sessions.unlock(c, AM, "protest"))
    store.write_sync(lambda c: sessions.reopen(c, AM, "J1", "protest"))

    batch = store.query(lambda c: outbox.prepare_batch(c, 10_000, 1 << 40))
    assert batch is not None
    records = json.loads(batch.body)["records"]
    sent = [
        r["payload"]
        for r in records
        if r["kind"] == "audit" and r["payload"]["action"].startswith("session.")
    ]
    assert [p["action"] for p in sent] == [
        "session.sign_off",
        "session.lock",
        "session.unlock",
        "session.reopen",
    ]
    lock = sent[1]["detail"]
    assert lock["panel"] == ["J1", "J2", "J3"] and lock["signed_off"] == ["J1"]
    rules = lock["rules"]
    # What the cloud needs to compute the results the box computes from the sheets it holds.
    assert rules["snapshot_id"]
    assert set(rules["criteria"]) == {"technique", "performance", "choreography"}
    assert rules["criteria"]["technique"] == {"weight": "1", "kind": "score"}
    assert rules["scoring"]["judges"] == "mean" and rules["scoring"]["rank_within"]
    # Each record is a link of the audit chain, which still verifies.
    assert all({"seq", "hash", "prev_hash"} <= set(p) for p in sent)
    assert store.query(lambda c: chain.verify_chain(c, "audit_log")).ok


def test_the_judges_event_download_shows_their_sign_off_and_the_lock(store: Store) -> None:
    j1 = paired_device(store, "J1")
    signed = store.write_sync(lambda c: sessions.sign_off(c, j1, AM))
    store.write_sync(lambda c: sessions.lock(c, PM, "awards"))
    event = store.query(lambda c: judge_event(c, j1))
    by_id = {s["id"]: s for s in event["sessions"]}
    assert by_id[AM]["signed_off_at"] == signed["signed_off_at"] and not by_id[AM]["locked"]
    assert by_id[PM]["signed_off_at"] is None and by_id[PM]["locked"]
    other = store.query(lambda c: judge_event(c, paired_device(store, "J2")))
    assert {s["id"]: s["signed_off_at"] for s in other["sessions"]}[AM] is None  # J1's, not J2's
